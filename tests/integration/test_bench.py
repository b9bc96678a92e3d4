"""`mserve bench` against real servers: our own, and small servers whose speed the test controls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mserve.server.process import free_port

pytestmark = pytest.mark.integration

QUICK = ["--warmup", "0.5", "--window", "0.5", "-q"]


def bench_json(mserve_cli: Any, *args: str) -> dict[str, Any]:
    """Run ``mserve bench ARGS --json`` and return the result document."""
    proc = mserve_cli("bench", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", ["v2-json", "v2-binary"])
def test_sweep_counts_match_the_servers_statistics(
    served: Any, protocol: str, mserve_cli: Any
) -> None:
    url = f"http://{served.address}"
    result = bench_json(
        mserve_cli,
        url,
        "-m",
        "digits",
        "--protocol",
        protocol,
        "--concurrency",
        "1,4",
        "--duration",
        "1",
        *QUICK,
    )
    assert [s["load"]["concurrency"] for s in result["steps"]] == [1, 4]
    for step in result["steps"]:
        assert step["error_count"] == 0
        assert step["count"] > 50
        answered_by_server = step["server"]["requests"]
        # everything the generator got back, warm-up included, is what the server says it served
        assert step["warmup"]["ok"] + step["count"] == answered_by_server
        assert step["server"]["compute_infer_ms"] > 0
        assert step["latency_ms"]["p50"] <= step["latency_ms"]["p99"] <= step["latency_ms"]["max"]
    assert result["schema"] == "mserve.bench.result/1"
    assert result["target"]["model"] == "digits"
    assert result["target"]["protocol"] == protocol


def test_open_loop_sees_the_stall_that_closed_loop_hides(slow_server: Any, mserve_cli: Any) -> None:
    url = slow_server("stall")  # frozen for 1 s once every 2 s
    common = ["--protocol", "http", "--method", "GET", "--warmup", "0", "--window", "1"]
    open_loop = bench_json(mserve_cli, url, *common, "--rate", "100", "--duration", "4", "-q")[
        "steps"
    ][0]
    closed = bench_json(mserve_cli, url, *common, "--concurrency", "1", "--duration", "4", "-q")[
        "steps"
    ][0]
    # open loop: half the requests are intended during a freeze and wait up to 1 s
    assert open_loop["latency_ms"]["p90"] > 300
    assert open_loop["achieved_rate_rps"] == pytest.approx(100, rel=0.05)
    # a constant schedule holds rate x time sends; each was sent in the window it was due in
    assert open_loop["scheduled_rate_rps"] == pytest.approx(100, rel=0.02)
    assert open_loop["achieved_rate_rps"] == pytest.approx(
        open_loop["scheduled_rate_rps"], rel=0.05
    )
    # closed loop at concurrency 1: one request waits out each freeze, thousands do not
    assert closed["latency_ms"]["p90"] < 50
    assert closed["latency_ms"]["max"] > 500


def test_a_drifting_server_is_marked_unstable(slow_server: Any, mserve_cli: Any) -> None:
    url = slow_server("drift", 4.0)  # 4 ms slower every second
    step = bench_json(
        mserve_cli,
        url,
        "--protocol",
        "http",
        "--method",
        "GET",
        "--concurrency",
        "1",
        "--warmup",
        "0",
        "--window",
        "1",
        "--max-duration",
        "4",
        "--stability",
        "10",
        "-q",
    )["steps"][0]
    assert step["stable"] is False
    assert step["verdict"] == "INVALID"
    assert any("not stable within 10%" in r for r in step["reasons"])


def test_a_steady_server_is_stable(slow_server: Any, mserve_cli: Any) -> None:
    url = slow_server("fixed", 5.0)
    step = bench_json(
        mserve_cli,
        url,
        "--protocol",
        "http",
        "--method",
        "GET",
        "--concurrency",
        "2",
        "--warmup",
        "0.5",
        "--window",
        "1",
        "--max-duration",
        "8",
        "--stability",
        "25",
        "-q",
    )["steps"][0]
    assert step["stable"] is True
    assert step["latency_ms"]["p50"] == pytest.approx(5.0, abs=2.0)


def test_unreachable_url_is_a_clear_error(mserve_cli: Any) -> None:
    proc = mserve_cli("bench", f"http://127.0.0.1:{free_port()}", "-m", "digits", *QUICK)
    assert proc.returncode == 5
    assert "cannot connect" in proc.stderr


def test_unknown_model_is_a_clear_error(served: Any, mserve_cli: Any) -> None:
    proc = mserve_cli("bench", f"http://{served.address}", "-m", "no_such_model", *QUICK)
    assert proc.returncode == 4
    assert "unknown model 'no_such_model'" in proc.stderr


def test_a_shape_that_does_not_fit_is_a_clear_error(served: Any, mserve_cli: Any) -> None:
    proc = mserve_cli(
        "bench", f"http://{served.address}", "-m", "digits", "--shape", "input:3,3", *QUICK
    )
    assert proc.returncode == 2
    assert "does not fit the model's shape [-1, 64]" in proc.stderr


def test_closed_and_open_loop_together_is_refused(served: Any, mserve_cli: Any) -> None:
    proc = mserve_cli(
        "bench", f"http://{served.address}", "-m", "digits", "--concurrency", "1", "--rate", "5"
    )
    assert proc.returncode == 2
    assert "either --concurrency" in proc.stderr


def test_every_request_failing_exits_non_zero(slow_server: Any, mserve_cli: Any) -> None:
    url = slow_server("fixed", 0.0)
    proc = mserve_cli(
        "bench",
        url,
        "--protocol",
        "http",
        "--method",
        "GET",
        "--expect-status",
        "201",
        "--concurrency",
        "1",
        "--duration",
        "0.5",
        *QUICK,
    )
    assert proc.returncode == 1
    assert "every request failed" in proc.stderr


def test_several_workers_merge_into_one_result(
    served: Any, tmp_path: Path, mserve_cli: Any
) -> None:
    out = tmp_path / "result.json"
    proc = mserve_cli(
        "bench",
        f"http://{served.address}",
        "-m",
        "digits",
        "--concurrency",
        "4",
        "--workers",
        "2",
        "--duration",
        "1",
        "-o",
        str(out),
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    step = json.loads(out.read_text())["steps"][0]
    assert step["generator"]["workers"] == 2
    assert step["generator"]["connections"] == 4
    assert step["warmup"]["ok"] + step["count"] == step["server"]["requests"]
