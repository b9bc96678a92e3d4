"""``mserve quickstart``: train a real model, put it in a repository, serve it, call it, measure.

Everything runs on this machine with data that scikit-learn ships (the digits images); nothing is
downloaded.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Step = Callable[[str], None]


@dataclass(slots=True)
class QuickstartResult:
    """What the quickstart measured."""

    repository: Path
    model: str
    url: str
    test_rows: int
    accuracy_in_process: float
    accuracy_served: float
    agreement: float  # fraction of rows where served and in-process labels agree
    max_abs_prob_diff: float
    requests: int
    seconds: dict[str, float] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)  # the sweep's result document
    bench_int8: dict[str, Any] = field(default_factory=dict)  # the same sweep of digits-int8
    conversion: dict[str, Any] = field(default_factory=dict)  # mserve convert's report
    reports: list[str] = field(default_factory=list)  # the HTML reports written
    # what /metrics said after the test images and after the bench, and the ops files written
    monitoring: dict[str, Any] = field(default_factory=dict)


def train_digits(seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small MLP trained on scikit-learn's digits; returns model and train/test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=seed)
    with warnings.catch_warnings():
        # 300 epochs leave the loss still creeping down; the model is accurate (~0.98) and the
        # warning would only alarm a first-time user
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model, x_train, x_test, y_train, y_test


INT8 = "digits-int8-dynamic"


def convert_digits(
    repository: Path, model: Any, x_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """``mserve convert``'s pipeline on the classifier: fp32 as ``digits`` and int8-dynamic as
    ``digits-int8-dynamic`` when it stays within tolerance on the test images; a summary."""
    from mserve.convert.pipeline import ConvertOptions, convert_exported
    from mserve.convert.sklearn import sklearn_export
    from mserve.errors import ParityError

    options = ConvertOptions(
        variants=("int8-dynamic",), eval_inputs={"input": x_test}, labels=y_test, measure=False
    )
    problem = ""
    try:
        report = convert_exported(sklearn_export(model), repository / "digits", options)
        variants = report.variants
    except ParityError as exc:  # the fp32 model is written; the int8 one is not
        problem = str(exc)
        variants = []
    return {
        "kept": [v.model for v in variants if v.kept],
        "accuracy": {v.model: v.accuracy for v in variants},
        "parity": {v.model: v.parity.summary() for v in variants if v.parity},
        "problem": problem,
    }


def watch_drift(model_dir: Path, reference: np.ndarray, half_life_s: float = 60.0) -> None:
    """Give a model its drift reference: ``reference.npz`` beside its config.yaml, named in a
    ``drift`` section (the server compares what it is sent with these rows)."""
    from dataclasses import replace

    from mserve.config import CONFIG_FILE, DriftConfig, load_model_config, write_model_config

    np.savez(model_dir / "reference.npz", input=reference)
    path = model_dir / CONFIG_FILE
    config = load_model_config(path, model_dir.name)
    write_model_config(path, replace(config, drift=DriftConfig("reference.npz", half_life_s)))


def read_metrics(url: str, model: str = "digits") -> dict[str, Any]:
    """What the server's ``/metrics`` says of a model: requests, errors, executions, rows, mean
    latency and the input drift against its reference."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from mserve.monitor.snapshot import parse

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    figures = parse(text, time.monotonic()).models.get(model)
    if figures is None:
        return {}
    psi = {
        s.labels["input"]: round(s.value, 4)
        for fam in text_string_to_metric_families(text)
        if fam.name == "mserve_input_drift_psi"
        for s in fam.samples
        if s.labels.get("model") == model
    }
    mean_ms = figures.latency_sum / figures.latency_count * 1000 if figures.latency_count else 0
    return {
        "requests": int(figures.requests),
        "errors": int(figures.errors),
        "executions": int(figures.executions),
        "rows": int(figures.rows),
        "mean_latency_ms": round(mean_ms, 4),
        "drift_psi": psi,
    }


def write_reports(workdir: Path, results: dict[str, dict[str, Any]]) -> list[str]:
    """One self-contained HTML report per sweep (when plotly is installed); their paths."""
    try:
        from mserve.bench.report import write_report
    except ImportError:  # pragma: no cover - the quickstart extra installs plotly
        return []
    paths = []
    for name, result in results.items():
        if result:
            path = workdir / ("report.html" if name == "digits" else f"report-{name}.html")
            write_report(result, path, "html")
            paths.append(str(path))
    return paths


def run(workdir: Path, step: Step = lambda _: None, batch: int = 16) -> QuickstartResult:
    """Train, write, serve, call over V2 with tritonclient, and compare with the model itself."""
    import tritonclient.http as httpclient

    from mserve.server.process import ServerProcess

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    step("training an MLP on scikit-learn's digits")
    model, x_train, x_test, _, y_test = train_digits()
    expected_labels = model.predict(x_test)
    expected_probs = model.predict_proba(x_test).astype(np.float32)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    repository = workdir / "models"
    step(f"converting to ONNX (fp32, and int8 checked against it) into {repository}")
    conversion = convert_digits(repository, model, x_test, y_test)
    watch_drift(repository / "digits", x_train)
    seconds["convert"] = time.perf_counter() - t

    t = time.perf_counter()
    step("starting mserve serve")
    server = ServerProcess(repository).start()
    seconds["start"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        step(f"sending {len(x_test)} test images through {server.url} with tritonclient")
        client = httpclient.InferenceServerClient(server.host + ":" + str(server.port))
        labels = np.empty(len(x_test), dtype=np.int64)
        probs = np.empty((len(x_test), 10), dtype=np.float32)
        requests = 0
        for start in range(0, len(x_test), batch):
            rows = x_test[start : start + batch]
            inp = httpclient.InferInput("input", list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=requests % 2 == 0)  # both encodings
            result = client.infer(
                "digits",
                [inp],
                outputs=[
                    httpclient.InferRequestedOutput("label", binary_data=True),
                    httpclient.InferRequestedOutput("probabilities", binary_data=False),
                ],
            )
            labels[start : start + len(rows)] = result.as_numpy("label")
            probs[start : start + len(rows)] = result.as_numpy("probabilities")
            requests += 1
        client.close()
        seconds["infer"] = time.perf_counter() - t
        monitoring: dict[str, Any] = {"after_test_images": read_metrics(server.url)}

        t = time.perf_counter()
        step(f"measuring {server.url} with mserve bench (closed loop, concurrency 1, 4, 16)")
        bench = sweep(server.url)
        int8 = INT8 in conversion.get("kept", [])
        if int8:
            step(f"the same sweep of {INT8}")
        bench_int8 = sweep(server.url, model=INT8) if int8 else {}
        seconds["bench"] = time.perf_counter() - t
        monitoring["after_bench"] = read_metrics(server.url)
    finally:
        server.stop()
    reports = write_reports(workdir, {"digits": bench, INT8: bench_int8})
    from mserve.deploy.monitoring import write_monitoring_assets

    monitoring["assets"] = [str(p) for p in write_monitoring_assets(workdir / "monitoring")]
    return QuickstartResult(
        repository=repository,
        model="digits",
        url=server.url,
        test_rows=len(x_test),
        accuracy_in_process=float(np.mean(expected_labels == y_test)),
        accuracy_served=float(np.mean(labels == y_test)),
        agreement=float(np.mean(labels == expected_labels)),
        max_abs_prob_diff=float(np.max(np.abs(probs - expected_probs))),
        requests=requests,
        seconds=seconds,
        bench=bench,
        bench_int8=bench_int8,
        conversion=conversion,
        reports=reports,
        monitoring=monitoring,
    )


def sweep(
    url: str, levels: tuple[int, ...] = (1, 4, 16), seconds: float = 2.0, model: str = "digits"
) -> dict[str, Any]:
    """A short closed-loop concurrency sweep of a digits model with V2 binary tensors."""
    import asyncio

    from mserve.bench.generator import Load
    from mserve.bench.result import Settings
    from mserve.bench.runner import benchmark
    from mserve.bench.targets import make_target

    target = make_target("v2-binary", url, model=model)
    settings = Settings(warmup_s=0.5, window_s=1.0, duration_s=seconds)
    loads = [Load("closed", concurrency=c) for c in levels]
    return asyncio.run(benchmark(target, loads, settings, command=["quickstart"]))


def how_to_call(repository: Path) -> str:
    """The commands a user runs next: serve the repository, call it with curl and Python."""
    import json

    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
    )
    return f"""Serve it:
  mserve serve {repository} --port 8000

Watch it: open http://localhost:8000/dashboard, or in a terminal
  mserve monitor http://localhost:8000
(Prometheus scrapes http://localhost:8000/metrics; a Grafana dashboard and alert rules are in
{repository.parent / "monitoring"})

Call it with curl (V2 JSON):
  curl -s localhost:8000/v2/models/digits/infer -H 'content-type: application/json' \\
    -d '{body}'

Call it from Python (tritonclient):
  import numpy as np, tritonclient.http as http
  client = http.InferenceServerClient("localhost:8000")
  x = http.InferInput("input", [1, 64], "FP32")
  x.set_data_from_numpy(np.zeros((1, 64), np.float32))
  print(client.infer("digits", [x]).as_numpy("label"))"""
