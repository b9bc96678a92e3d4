"""``GET /dashboard`` of a real server, opened in headless Chromium while real clients send it
known traffic: the page asks nothing of any other origin, logs no error, counts exactly the
requests sent, and draws its charts."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from mserve.config import DriftConfig, DynamicBatching

pytestmark = pytest.mark.integration

GOOD = 60  # requests the test sends, about 20 a second for 3 seconds
BAD = 3  # requests with a shape the model refuses (400)

#: the figures of one model's card, as the page holds them (data-value: the plain number)
READ_FIGURES = """(name) => Object.fromEntries(Array.from(
  document.querySelectorAll(`[data-model="${name}"] .figures [data-figure]`)).map(
    (el) => [el.dataset.figure, el.dataset.value]))"""

#: what each chart of one model's card has drawn
READ_CHARTS = """(name) => Object.fromEntries(Array.from(
  document.querySelectorAll(`[data-model="${name}"] [data-chart]`)).map((fig) => [
    fig.dataset.chart, {
      points: Number(fig.querySelector("svg").dataset.points || 0),
      lines: Array.from(fig.querySelectorAll("path.line")).map((p) => p.getAttribute("d")),
      bars: fig.querySelectorAll("rect.bar").length,
    }]))"""


@pytest.fixture(scope="module")
def dashboard_server(
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Any,
    place: Any,
    digits_model: Any,
) -> Any:
    """A server of its own (so its counts are the test's): the digits classifier with dynamic
    batching and a drift reference set."""
    root = tmp_path_factory.mktemp("dashboard")
    config = dataclasses.replace(
        digits_model.config,
        dynamic_batching=DynamicBatching(max_queue_delay_us=2000, max_queue_size=64),
        drift=DriftConfig("reference.npz", half_life_s=10.0),
    )
    folder = place(root, "digits", {1: digits_model.onnx}, config=config)
    np.savez(folder / "reference.npz", input=digits_model.x_test[:200])
    return start_server(root)


def _send_traffic(address: str, rows: np.ndarray, errors: list[BaseException]) -> None:
    """GOOD requests of one or two rows, spread over about three seconds, then BAD ones."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(address)
    try:
        for i in range(GOOD):
            x = rows[i % len(rows) : i % len(rows) + 1 + i % 2]
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.infer("digits", [inp])
            time.sleep(0.05)
        for _ in range(BAD):
            wrong = np.zeros((1, 63), np.float32)
            inp = httpclient.InferInput("input", list(wrong.shape), "FP32")
            inp.set_data_from_numpy(wrong)
            try:
                client.infer("digits", [inp])
            except InferenceServerException as exc:
                if "400" not in str(exc.status()):
                    errors.append(exc)
            else:
                errors.append(AssertionError("a request of the wrong shape was answered"))
    except BaseException as exc:  # the main thread reports it
        errors.append(exc)
    finally:
        client.close()


def test_the_dashboard_counts_live_traffic_and_draws_it(
    dashboard_server: Any,
    digits_model: Any,
    page: Any,
    page_log: Any,
    save_artefact: Any,
    tmp_path: Path,
) -> None:
    server = dashboard_server
    problems, requests = page_log.problems, page_log.requests

    page.goto(f"http://{server.address}/dashboard")  # no trailing slash: the harder case
    page.wait_for_selector('body[data-updated] [data-model="digits"]', timeout=15_000)
    before = page.evaluate(READ_FIGURES, "digits")
    assert before["requests_total"] in ("", "0")

    errors: list[BaseException] = []
    sender = threading.Thread(
        target=_send_traffic, args=(server.address, digits_model.x_test, errors)
    )
    sender.start()
    expected = str(GOOD + BAD)
    busiest = 0.0
    figures = before
    deadline = time.monotonic() + 20  # 3 s of traffic, then the page's count within 15 s
    while time.monotonic() < deadline:
        figures = page.evaluate(READ_FIGURES, "digits")
        busiest = max(busiest, float(figures["rps"] or 0))
        if figures["requests_total"] == expected and busiest > 0 and not sender.is_alive():
            break
        page.wait_for_timeout(100)
    sender.join(timeout=30)
    assert errors == []
    assert figures["requests_total"] == expected, figures
    assert figures["errors_total"] == str(BAD), figures
    assert busiest > 0
    assert float(figures["p99_ms"]) >= float(figures["p50_ms"]) > 0

    charts = page.evaluate(READ_CHARTS, "digits")
    assert sorted(charts) == ["batch_sizes", "errors_per_s", "latency", "queue_depth", "rps"]
    for name in ("rps", "latency", "queue_depth", "errors_per_s"):
        assert charts[name]["points"] > 1, name
        assert any(d.count("L") >= 1 for d in charts[name]["lines"]), name
    assert len(charts["latency"]["lines"]) == 2  # p50 and p99
    assert charts["batch_sizes"]["bars"] >= 1
    psi = page.locator('[data-model="digits"] .drift tr[data-input="input"] [data-figure="psi"]')
    assert psi.get_attribute("data-level") in ("ok", "warn", "alert")
    header = page.locator("[data-server]")
    assert header.locator('[data-figure="workers"]').inner_text() == "1"
    assert float(header.locator('[data-figure="rss_mib"]').get_attribute("data-value")) > 1
    assert page.locator("#connection").get_attribute("data-state") == "live"

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    save_artefact(shot)

    assert problems == []
    origin = f"http://{server.address}"
    assert requests
    assert all(u.startswith(origin + "/dashboard") for u in requests), requests
    assert {urlsplit(u).path for u in requests} >= {
        "/dashboard",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
        "/dashboard/data",
    }


def test_the_dashboards_files_and_data(dashboard_server: Any) -> None:
    server = dashboard_server
    types = {
        "/dashboard": "text/html",
        "/dashboard/": "text/html",
        "/dashboard/dashboard.js": "text/javascript",
        "/dashboard/dashboard.css": "text/css",
        "/dashboard/data": "application/json",
    }
    for path, ctype in types.items():
        reply = server.request("GET", path)
        assert reply.status == 200, path
        assert reply.headers["content-type"].split(";")[0] == ctype, path

    doc = server.request("GET", "/dashboard/data").json()
    assert doc["server"]["window_s"] > 0
    assert "digits" in doc["models"]
    future = server.request("GET", f"/dashboard/data?since={time.time() + 3600:.3f}")
    assert future.status == 200
    assert future.json()["points"] == []
    assert future.json()["models"] == doc["models"]

    missing = server.request("GET", "/dashboard/nope.js")
    assert missing.status == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert "error" in missing.json()
