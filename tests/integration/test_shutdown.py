"""SIGTERM under continuous load: readiness turns false, new connections are refused, and every
request the server accepted is answered before it exits (counted on both sides)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from slow_model import SLOW, iterations, slow_body

from mserve.config import ModelConfig
from mserve.server.process import ServerProcess

LOAD_S = 1.5  # continuous load before SIGTERM
CLIENTS = 6


def plus1_body(x: float) -> str:
    doc = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 1], "data": [x]}]}
    return json.dumps(doc)


def client_loop(port: int, index: int, stop_at: float, outcomes: Counter[str]) -> None:
    """Send requests back to back on a keep-alive connection until the server refuses the
    connection; count each outcome. A request is either answered correctly, or was never
    sent because the connection was refused."""
    i = 0
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < stop_at:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.connect()
            except ConnectionRefusedError:
                outcomes["refused"] += 1
                return
        x = float(index * 100_000 + i)
        slow = i % 3 == 0  # a third take about 20 ms on the slow model's one instance
        path = "/v2/models/slow/infer" if slow else "/v2/models/plus1/infer"
        body = slow_body(x, 0.02) if slow else plus1_body(x)
        try:
            conn.request("POST", path, body=body)
            reply = conn.getresponse()
            data = json.loads(reply.read())
        except (ConnectionError, http.client.HTTPException) as exc:
            outcomes[f"lost: {type(exc).__name__}"] += 1
            conn.close()
            conn = None
            continue
        expected = x + iterations(0.02) if slow else x + 1.0
        if reply.status == 200 and data["outputs"][0]["data"] == [expected]:
            outcomes["ok"] += 1
        else:
            outcomes[f"wrong: {reply.status} {data}"] += 1
        if reply.getheader("connection", "").lower() == "close":
            outcomes["told to close"] += 1
            conn.close()
            conn = None
        i += 1
    outcomes["still running at the end"] += 1


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_answers_every_accepted_request(
    tmp_path: Path, place: Any, onnx_factory: Any, workers: int
) -> None:
    place(tmp_path, "slow", {1: onnx_factory.counting_loop(1)}, config=SLOW)
    place(tmp_path, "plus1", {1: onnx_factory.add_const(1.0)}, config=ModelConfig("plus1"))
    server = ServerProcess(tmp_path, args=["--workers", str(workers)], keep_log=True)
    server.start(timeout=60)
    outcomes: Counter[str] = Counter()
    stop_at = time.monotonic() + LOAD_S + 30
    try:
        threads = [
            threading.Thread(target=client_loop, args=(server.port, i, stop_at, outcomes))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        time.sleep(LOAD_S)
        assert server.proc is not None
        sent_before = outcomes["ok"]
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(30)
        for t in threads:
            t.join(30)
    finally:
        server.stop()
    log = server.log()
    server.log_path.unlink(missing_ok=True)
    assert status == 0, log
    assert sent_before > 20, f"too little load to test anything: {outcomes}"
    # the clients: every request sent was answered correctly; each client then found the
    # server gone (connection refused), none lost a request on the way
    assert set(outcomes) <= {"ok", "refused", "told to close"}, outcomes
    assert outcomes["refused"] == CLIENTS, outcomes
    # each worker: accepted = answered (the readiness probes of start() are among them)
    found = re.findall(r"drained: (\d+) of (\d+) HTTP request\(s\) answered, (\d+) unanswered", log)
    assert len(found) == workers, log
    answered = accepted = abandoned = 0
    for a, b, c in found:
        answered, accepted, abandoned = answered + int(a), accepted + int(b), abandoned + int(c)
    assert (answered, abandoned) == (accepted, 0)
    assert answered >= outcomes["ok"]


def test_with_an_unready_grace_the_server_reports_unready_and_serves_on(
    tmp_path: Path, place: Any, onnx_factory: Any
) -> None:
    """--unready-grace: at SIGTERM readiness turns false at once while new connections are
    still accepted and answered (load balancers notice first); then the drain as usual."""
    place(tmp_path, "plus1", {1: onnx_factory.add_const(1.0)}, config=ModelConfig("plus1"))
    server = ServerProcess(tmp_path, args=["--unready-grace", "3"])
    server.start(timeout=60)
    try:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        ready = 200
        while ready == 200 and time.monotonic() < deadline:  # the signal is taken at once
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/v2/health/ready")
            ready = conn.getresponse().status
            conn.close()
        assert ready == 503
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # a new one
        conn.request("POST", "/v2/models/plus1/infer", body=plus1_body(41.0))
        reply = conn.getresponse()
        assert reply.status == 200
        assert json.loads(reply.read())["outputs"][0]["data"] == [42.0]
        conn.close()
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
