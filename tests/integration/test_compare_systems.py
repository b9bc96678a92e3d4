"""``mserve compare`` end to end: mserve and the hand-written baselines started for real, loaded
by ``mserve bench`` for a second a step, one report; a system that is not installed skipped with
its install hint; systems that crash, hang or cannot be loaded recorded as failed."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from mserve.compare.cpus import split
from mserve.compare.model import model_under_test
from mserve.compare.run import Plan, run_system
from mserve.compare.systems import Launch, ModelUnderTest
from mserve.repository import write_model

pytestmark = pytest.mark.integration

MEASURED = ("mserve", "fastapi", "flask")


@pytest.fixture
def digits_repo(tmp_path: Path, digits_model: Any) -> Path:
    write_model(tmp_path / "models", digits_model.config, 1, digits_model.onnx)
    return tmp_path / "models"


def test_compare_measures_each_system_and_skips_what_is_not_installed(
    digits_repo: Path, tmp_path: Path, mserve_cli: Any
) -> None:
    out = tmp_path / "out"
    envs = tmp_path / "envs"
    envs.mkdir()  # no system's environment: the baselines run from this interpreter
    done = mserve_cli(
        "compare", str(digits_repo / "digits"), "--systems", ",".join([*MEASURED, "triton"]),
        "--concurrency", "1,4", "--duration", "1", "--warmup", "0.5", "--out", str(out),
        timeout=300, env={"MSERVE_COMPARE_ENVS": str(envs)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"triton: skipped: no environment at {envs / 'triton'}" in done.stderr
    assert "scripts/compare-envs triton" in done.stderr
    for name in ("compare.md", "compare.html", "compare.json", "mserve.log"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "compare.json").read_text())
    runs = {run["key"]: run for run in doc["systems"]}
    assert list(runs) == [*MEASURED, "triton"]
    assert runs["triton"]["status"] == "skipped"
    for name in MEASURED:
        run = runs[name]
        assert run["status"] == "ok", run["reason"]
        assert run["startup_s"] > 0
        assert 0 < run["rss_idle_mib"] <= run["rss_peak_mib"]
        steps = run["sweep"]["steps"]
        assert [s["load"]["concurrency"] for s in steps] == [1, 4]
        assert all(s["throughput_rps"] > 0 for s in steps)
        assert all(s["error_count"] == 0 for s in steps)
        assert run["sweep"]["target"]["model"] == "digits"
    markdown = (out / "compare.md").read_text()
    for name in MEASURED:
        assert f"\n| {name} | v2-json | off |" in markdown
        assert f"\n| {name} | v2-json | off |" in "\n" + done.stdout
    assert "`triton`" in markdown
    assert "Plotly" in (out / "compare.html").read_text()


@dataclass
class StandIn:
    """A system of the test's making: its own ``launch``, or a missing hint."""

    name: str
    start: Callable[[int, Path], Launch] | None = None
    hint: str | None = None
    title: str = "stand-in"

    def missing(self) -> str | None:
        return self.hint

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        if self.start is None:
            raise RuntimeError("no way to start it")
        return self.start(port, workdir)


def _python(code: str, port: int, ready: str = "/") -> Launch:
    return Launch(
        argv=[sys.executable, "-c", code],
        ready_url=f"http://127.0.0.1:{port}{ready}",
        target=f"http://127.0.0.1:{port}",
        bench_args=["-m", "digits"],
    )


@pytest.fixture
def plan(digits_repo: Path, tmp_path: Path) -> Plan:
    return Plan(
        model=model_under_test(digits_repo / "digits"),
        out=tmp_path / "out",
        cpus=split(os.sched_getaffinity(0), None, None),
        concurrency=(1,),
        duration_s=0.5,
        warmup_s=0,
        ready_timeout_s=20,
        stop_timeout_s=2,
    )


def _quiet(line: str) -> None:
    pass


def test_not_installed_is_skipped_with_its_hint(plan: Plan) -> None:
    run = run_system(StandIn("absent", hint="run scripts/compare-envs absent"), False, plan, _quiet)
    assert (run.status, run.reason) == ("skipped", "run scripts/compare-envs absent")


def test_a_launcher_that_raises_fails_its_system(plan: Plan) -> None:
    run = run_system(StandIn("broken"), False, plan, _quiet)
    assert run.status == "failed"
    assert run.reason == "its launcher failed: RuntimeError: no way to start it"


def test_a_crash_before_ready_fails_with_the_log_tail(plan: Plan) -> None:
    crash = "print('the model would not load', flush=True); raise SystemExit(3)"
    run = run_system(StandIn("crash", lambda port, _: _python(crash, port)), False, plan, _quiet)
    assert (run.status, run.reason) == ("failed", "exited with status 3 before it was ready")
    assert "the model would not load" in run.log_tail
    assert run.exit_status == 3


def test_never_ready_is_stopped_with_every_process_it_started(plan: Plan) -> None:
    pids = plan.out / "child.pid"
    hang = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pids)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    stand_in = StandIn("hang", lambda port, _: _python(hang, port))
    quick = replace(plan, ready_timeout_s=1.5)
    run = run_system(stand_in, False, quick, _quiet)
    assert run.status == "failed"
    assert run.reason.startswith("not ready after 1.5 s")
    child = int(pids.read_text())
    assert not _alive(child), "the server's child outlived it"


def test_a_bench_failure_fails_the_system_and_stops_it(plan: Plan) -> None:
    # answers 200 to every GET, but has no V2 model: bench stops before any load
    server = "import http.server as h, sys; h.test(h.SimpleHTTPRequestHandler, port={port})"
    start = lambda port, _: _python(server.format(port=port), port)  # noqa: E731
    run = run_system(StandIn("plain", start), False, plan, _quiet)
    assert run.status == "failed"
    assert run.reason.startswith("mserve bench (sweep) exited with status")
    assert run.startup_s is not None
    assert run.rss_peak_mib is not None
    assert run.exit_status is not None


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True
