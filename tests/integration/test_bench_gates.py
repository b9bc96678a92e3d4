"""`mserve bench --assert / --baseline --fail-on` against servers whose speed the test sets:
the exit status and the message a CI pipeline sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

LOAD = ["--protocol", "http", "--method", "GET", "--concurrency", "2", "-q"]
SHORT = ["--warmup", "0.3", "--window", "0.5", "--duration", "2.5"]


def test_asserts_pass_and_break(slow_server: Any, mserve_cli: Any) -> None:
    url = slow_server("fixed", 5.0)
    ok = mserve_cli("bench", url, *LOAD, *SHORT, "--assert", "p99<500ms,errors==0")
    assert ok.returncode == 0, ok.stderr
    broken = mserve_cli("bench", url, *LOAD, *SHORT, "--assert", "p50<1ms,throughput>=100000")
    assert broken.returncode == 1
    lines = [line for line in broken.stderr.splitlines() if "gate broken" in line]
    assert len(lines) == 2
    assert lines[0].startswith("mserve bench: gate broken: step 1 (c=2): p50 ")
    assert lines[0].endswith(" ms breaks p50<1ms")
    assert lines[1].endswith("breaks throughput>=100000")


def test_fail_on_catches_a_slower_server_and_not_the_same_one(
    slow_server: Any, mserve_cli: Any, tmp_path: Path
) -> None:
    fast, slow = slow_server("fixed", 5.0), slow_server("fixed", 20.0)
    baseline = tmp_path / "baseline.json"
    first = mserve_cli("bench", fast, *LOAD, *SHORT, "-o", str(baseline))
    assert first.returncode == 0, first.stderr
    gate = ["--baseline", str(baseline), "--fail-on", "p50>+50%,throughput<-30%"]
    same = mserve_cli("bench", fast, *LOAD, *SHORT, *gate)
    assert same.returncode == 0, same.stderr
    slower = mserve_cli("bench", slow, *LOAD, *SHORT, *gate)
    assert slower.returncode == 1
    assert "gate broken: c=2: p50 " in slower.stderr
    assert "hits p50>+50%" in slower.stderr
    assert "hits throughput<-30%" in slower.stderr


def test_gate_options_are_checked_before_the_run(mserve_cli: Any, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/"  # never reached: the options are refused first
    alone = mserve_cli("bench", url, *LOAD, "--fail-on", "p99>+10%")
    assert alone.returncode == 2
    assert "--fail-on and --baseline go together" in alone.stderr
    bad = mserve_cli("bench", url, *LOAD, "--assert", "p99<fast")
    assert bad.returncode == 2
    assert "--assert: field 'p99<fast'" in bad.stderr
    missing = mserve_cli(
        "bench", url, *LOAD, "--baseline", str(tmp_path / "nope.json"), "--fail-on", "p99>+1%"
    )
    assert missing.returncode == 2
    assert "no such result file" in missing.stderr


def test_saved_runs_compare_and_serve_as_baselines(
    slow_server: Any, mserve_cli: Any, tmp_path: Path
) -> None:
    fast, slow = slow_server("fixed", 5.0), slow_server("fixed", 20.0)
    db = ["--db", str(tmp_path / "runs.db")]
    for url in (fast, fast, slow):
        run = mserve_cli("bench", url, *LOAD, *SHORT, *db)
        assert run.returncode == 0, run.stderr
        assert "mserve bench: saved as run " in run.stderr

    def compare(a: str, b: str, *extra: str) -> dict[str, str]:
        out = mserve_cli("results", *db, "compare", a, b, "--json", *extra)
        assert out.returncode == 0, out.stderr
        return {d["figure"]: d["verdict"] for d in json.loads(out.stdout)["deltas"]}

    # two runs of the same server: within noise, with a floor that allows for the other tests
    # running beside this one on a shared machine
    assert compare("latest~2", "latest~1", "--min-change", "15")["throughput"] == "within noise"
    slower = compare("latest~1", "latest")
    assert slower["throughput"] == "worse"
    assert slower["p50"] == "worse"
    assert compare("latest", "latest~1")["throughput"] == "better"
    # a saved run is a baseline too
    gate = mserve_cli(
        "bench", slow, *LOAD, *SHORT, *db, "--baseline", "latest~1", "--fail-on", "p50>+50%"
    )
    assert gate.returncode == 1
    assert "hits p50>+50%" in gate.stderr
