"""A Grafana dashboard over the metrics of ``GET /metrics`` (docs/metrics.md): a pure
function returning the dashboard's JSON as a dict."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mserve.deploy.prometheus import SERVER_FAILURES

__all__ = ["grafana_dashboard"]

_MODEL = 'model=~"$model"'
_RATE = "[$__rate_interval]"
_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def _target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend, **extra}


def _panel(
    kind: str,
    title: str,
    unit: str,
    queries: Sequence[tuple[str, str]],
    description: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One panel, without ``id``, ``gridPos`` and ``datasource`` (added by the layout)."""
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            _target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)
        ],
    }
    if kind == "timeseries":
        panel["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    for key, value in extra.items():
        if key == "defaults":
            panel["fieldConfig"]["defaults"].update(value)
        else:
            panel[key] = value
    return panel


def _ratio(numerator: str, denominator: str, by: str = "model") -> str:
    """sum(rate(numerator)) / sum(rate(denominator)) by ``by``, empty where nothing happened."""
    return (
        f"sum by ({by}) (rate({numerator}{_RATE}))\n"
        f"  / (sum by ({by}) (rate({denominator}{_RATE})) > 0)"
    )


def _quantile(q: float, histogram: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, model) (rate({histogram}_bucket{{{_MODEL}}}{_RATE})))"
    )


def _rows() -> list[tuple[str, list[dict[str, Any]]]]:
    failures = "|".join(SERVER_FAILURES)
    requests = f"mserve_requests_total{{{_MODEL}}}"
    failed = f'mserve_requests_total{{{_MODEL}, outcome=~"{failures}"}}'
    of_mserve = "and on (job, instance) mserve_workers"  # the process metrics of mserve only
    psi_steps = [
        {"color": "green", "value": None},
        {"color": "orange", "value": 0.1},
        {"color": "red", "value": 0.25},
    ]
    return [
        (
            "Traffic",
            [
                _panel(
                    "timeseries",
                    "Requests by outcome",
                    "reqps",
                    [
                        (
                            f"sum by (model, outcome) (rate({requests}{_RATE}))",
                            "{{model}} {{outcome}}",
                        )
                    ],
                    "Inference requests per second, by model and outcome.",
                ),
                _panel(
                    "timeseries",
                    "Server error ratio",
                    "percentunit",
                    [(_ratio(failed, requests), "{{model}}")],
                    f"Share of requests failed on the server side: {', '.join(SERVER_FAILURES)}.",
                ),
                _panel(
                    "timeseries",
                    "In-flight requests",
                    "short",
                    [
                        ("sum(mserve_inflight_requests)", "in flight"),
                        ("sum(mserve_workers)", "workers"),
                    ],
                    "Requests received and not yet answered, all transports; worker processes.",
                ),
                _panel(
                    "stat",
                    "Model ready",
                    "none",
                    [
                        (
                            f"max by (model, version) (mserve_model_ready{{{_MODEL}}})",
                            "{{model}} v{{version}}",
                        )
                    ],
                    "1 when the version serves.",
                    options={
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background",
                        "graphMode": "none",
                        "textMode": "value_and_name",
                    },
                    defaults={
                        "mappings": [
                            {
                                "type": "value",
                                "options": {
                                    "0": {"text": "NOT READY", "color": "red", "index": 0},
                                    "1": {"text": "READY", "color": "green", "index": 1},
                                },
                            }
                        ],
                        "thresholds": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "red", "value": None},
                                {"color": "green", "value": 1},
                            ],
                        },
                    },
                ),
            ],
        ),
        (
            "Latency",
            [
                _panel(
                    "timeseries",
                    "End-to-end latency p50 / p95 / p99",
                    "s",
                    [
                        (
                            _quantile(q, "mserve_request_duration_seconds"),
                            f"p{round(q * 100)} {{{{model}}}}",
                        )
                        for q in (0.5, 0.95, 0.99)
                    ],
                    "Successful requests, from the complete request to the encoded response.",
                ),
                _panel(
                    "timeseries",
                    "Latency breakdown (mean)",
                    "s",
                    [
                        (
                            _ratio(
                                f"mserve_{phase}_duration_seconds_sum{{{_MODEL}}}",
                                f"mserve_{phase}_duration_seconds_count{{{_MODEL}}}",
                            ),
                            f"{{{{model}}}} {phase}",
                        )
                        for phase in _PHASES
                    ],
                    "Mean time per request in each phase; the rest of end-to-end is the wire.",
                    defaults={
                        "custom": {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30}
                    },
                ),
            ],
        ),
        (
            "Queues and batches",
            [
                _panel(
                    "timeseries",
                    "Queue depth vs capacity",
                    "short",
                    [
                        (f"sum by (model) (mserve_queue_depth{{{_MODEL}}})", "{{model}} depth"),
                        (
                            f"sum by (model) (mserve_queue_capacity{{{_MODEL}}})",
                            "{{model}} capacity",
                        ),
                    ],
                    "Requests waiting in the dynamic-batching queue; capacity 0 means unbounded.",
                ),
                _panel(
                    "timeseries",
                    "Batch size",
                    "short",
                    [
                        (
                            _ratio(
                                f"mserve_batch_size_sum{{{_MODEL}}}",
                                f"mserve_batch_size_count{{{_MODEL}}}",
                            ),
                            "{{model}} mean",
                        ),
                        (_quantile(0.5, "mserve_batch_size"), "{{model}} p50"),
                    ],
                    "Rows per execution of the model.",
                ),
                _panel(
                    "heatmap",
                    "Batch size distribution",
                    "short",
                    [],
                    "Executions per batch-size bucket (upper bound).",
                    targets=[
                        _target(
                            f"sum by (le) (increase(mserve_batch_size_bucket{{{_MODEL}}}{_RATE}))",
                            "{{le}}",
                            "A",
                            format="heatmap",
                        )
                    ],
                    options={
                        "calculate": False,
                        "cellGap": 1,
                        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                        "yAxis": {"axisLabel": "rows"},
                    },
                ),
            ],
        ),
        (
            "Process and GPU",
            [
                _panel(
                    "timeseries",
                    "CPU",
                    "short",
                    [
                        (
                            f"sum by (instance) "
                            f"(rate(process_cpu_seconds_total{_RATE}) {of_mserve})",
                            "{{instance}}",
                        )
                    ],
                    "CPU seconds per second of all workers (1 = one core busy).",
                ),
                _panel(
                    "timeseries",
                    "Resident memory",
                    "bytes",
                    [
                        (
                            f"sum by (instance) (process_resident_memory_bytes {of_mserve})",
                            "{{instance}}",
                        )
                    ],
                    "Resident memory of all workers.",
                ),
                _panel(
                    "timeseries",
                    "GPU utilisation",
                    "percentunit",
                    [("mserve_gpu_utilization_ratio", "{{instance}} gpu {{gpu}} {{name}}")],
                    "GPU busy fraction from NVML (only with a GPU and nvidia-ml-py).",
                ),
                _panel(
                    "timeseries",
                    "GPU memory",
                    "bytes",
                    [
                        ("mserve_gpu_memory_used_bytes", "{{instance}} gpu {{gpu}} used"),
                        ("mserve_gpu_memory_total_bytes", "{{instance}} gpu {{gpu}} total"),
                    ],
                ),
            ],
        ),
        (
            "Input drift",
            [
                _panel(
                    "timeseries",
                    "Input drift (PSI)",
                    "none",
                    [(f"mserve_input_drift_psi{{{_MODEL}}}", "{{model}} {{input}}")],
                    "Population stability index vs the reference: >0.1 a shift, >0.25 a large one.",
                    defaults={
                        "thresholds": {"mode": "absolute", "steps": psi_steps},
                        "custom": {"thresholdsStyle": {"mode": "line"}},
                    },
                ),
                _panel(
                    "timeseries",
                    "Feature shift",
                    "none",
                    [(f"mserve_input_feature_shift{{{_MODEL}}}", "{{model}} {{input}}")],
                    "Largest shift of one feature's mean, in reference standard deviations.",
                ),
            ],
        ),
    ]


def _layout(
    rows: list[tuple[str, list[dict[str, Any]]]], datasource: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows of panels, two a line (12 of 24 columns), with unique ids and grid positions."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in rows:
        gid = len(panels) + 1
        grid = {"h": 1, "w": 24, "x": 0, "y": y}
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": gid,
                "gridPos": grid,
                "collapsed": False,
                "panels": [],
            }
        )
        y += 1
        for i, panel in enumerate(row):
            x = 12 * (i % 2)
            panel["id"] = len(panels) + 1
            panel["gridPos"] = {"h": 8, "w": 12, "x": x, "y": y}
            panel["datasource"] = datasource
            for target in panel["targets"]:
                target["datasource"] = datasource
            panels.append(panel)
            if x or i == len(row) - 1:
                y += 8
    return panels


def grafana_dashboard(title: str = "mserve", datasource_uid: str = "${DS_PROMETHEUS}") -> dict:
    """A Grafana dashboard (schema 39) over mserve's metrics, with a ``model`` variable.

    ``datasource_uid`` names the Prometheus data source; a ``${NAME}`` placeholder (the default)
    makes the dashboard ask for one on import (``__inputs``).
    """
    datasource = {"type": "prometheus", "uid": datasource_uid}
    placeholder = re.fullmatch(r"\$\{(\w+)\}", datasource_uid)
    uid = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "mserve"
    inputs = (
        [
            {
                "name": placeholder.group(1),
                "label": "Prometheus",
                "description": "the Prometheus that scrapes mserve",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ]
        if placeholder
        else []
    )
    model_query = "label_values(mserve_requests_total, model)"
    return {
        "__inputs": inputs,
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "annotations": {"list": []},
        "description": "mserve: traffic, latency, queues, batches, process, GPU and input drift",
        "editable": True,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": _layout(_rows(), datasource),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["mserve"],
        "templating": {
            "list": [
                {
                    "name": "model",
                    "label": "model",
                    "type": "query",
                    "datasource": datasource,
                    "definition": model_query,
                    "query": {"query": model_query, "refId": "PrometheusVariableQueryEditor"},
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "options": [],
                    "sort": 1,
                }
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
    }
