"""Monitoring assets: the dashboard and rules use only documented metrics, and the real
``promtool`` accepts the rules and shows which alerts fire on made-up series."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mserve.cli import deploy as deploy_cli
from mserve.cli.exit_codes import OK, USAGE
from mserve.deploy.monitoring import (
    AlertThresholds,
    alert_rules,
    grafana_dashboard,
    prometheus_scrape_config,
    write_monitoring_assets,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
METRIC = re.compile(r"\b((?:mserve|process)_[a-z_]+)\b(\{[^}]*\})?")
ALERTS = {
    "MserveHighP99Latency",
    "MserveHighErrorRatio",
    "MserveQueueNearFull",
    "MserveModelNotReady",
    "MserveInputDrift",
}


def _documented() -> dict[str, tuple[str, str]]:
    """Metric name -> (type, labels) from the tables of docs/metrics.md."""
    row = re.compile(r"^\| `(\w+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.MULTILINE)
    found = {m[1]: (m[2], m[3].strip()) for m in row.finditer(DOC.read_text(encoding="utf-8"))}
    assert "mserve_requests_total" in found, "the doc's metric tables changed shape"
    return found


def _metric_type(name: str, documented: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    if name in documented:
        return documented[name]
    base, _, suffix = name.rpartition("_")
    if suffix in ("bucket", "sum", "count") and documented.get(base, ("",))[0] == "histogram":
        return documented[base]
    return None


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _rule_exprs(rules: dict[str, Any]) -> list[str]:
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


# --- structure -------------------------------------------------------------------------------


def test_every_metric_in_the_assets_is_documented() -> None:
    documented = _documented()
    exprs = _dashboard_exprs(grafana_dashboard()) + _rule_exprs(alert_rules())
    exprs.append(grafana_dashboard()["templating"]["list"][0]["definition"])
    used = set()
    for expr in exprs:
        names = [m[1] for m in METRIC.finditer(expr)]
        assert names, f"no mserve metric in {expr!r}"
        for name in names:
            assert _metric_type(name, documented), f"{name} is not in docs/metrics.md"
            used.add(name)
    # the dashboard covers the brief: latency phases, batches, process, GPU and drift
    for name in (
        "mserve_request_duration_seconds_bucket",
        "mserve_compute_infer_duration_seconds_sum",
        "mserve_batch_size_bucket",
        "mserve_queue_capacity",
        "mserve_inflight_requests",
        "mserve_model_ready",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "mserve_gpu_utilization_ratio",
        "mserve_input_feature_shift",
    ):
        assert name in used


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    dashboard = grafana_dashboard(title="Prod mserve", datasource_uid="abc123")
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "abc123"}
            assert p["targets"]
            assert all(t["refId"] and t["expr"] for t in p["targets"])
    assert {p["type"] for p in panels} >= {"row", "timeseries", "stat", "heatmap"}
    assert dashboard["title"] == "Prod mserve"
    assert dashboard["uid"] == "prod-mserve"
    assert dashboard["__inputs"] == []  # a concrete data source needs no input on import


def test_dashboard_filters_by_the_model_variable_and_uses_rate_interval() -> None:
    dashboard = grafana_dashboard()
    assert 38 <= dashboard["schemaVersion"] <= 41
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    (var,) = dashboard["templating"]["list"]
    assert var["name"] == "model"
    assert var["multi"]
    assert var["includeAll"]
    assert var["query"]["query"] == "label_values(mserve_requests_total, model)"
    assert var["datasource"]["uid"] == "${DS_PROMETHEUS}"
    documented = _documented()
    for expr in _dashboard_exprs(dashboard):
        assert re.findall(r"\[[^\]]*\]", expr) == ["[$__rate_interval]"] * expr.count("[")
        for m in METRIC.finditer(expr):
            kind = _metric_type(m[1], documented)
            if kind and "model" in kind[1]:
                assert 'model=~"$model"' in (m[2] or ""), f"{m[1]} not filtered in {expr!r}"


def test_dashboard_survives_json() -> None:
    dashboard = grafana_dashboard()
    assert json.loads(json.dumps(dashboard)) == dashboard


def test_alert_rules_carry_severity_and_templated_annotations() -> None:
    (group,) = alert_rules()["groups"]
    assert {r["alert"] for r in group["rules"]} == ALERTS
    for rule in group["rules"]:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "{{ $labels.model }}" in text
        assert "$value" in text


def test_thresholds_reach_the_expressions() -> None:
    t = AlertThresholds(p99_seconds=0.05, error_ratio=0.002, queue_fraction=0.5, drift_psi=0.1)
    exprs = dict(zip(sorted(ALERTS), [""] * 5, strict=True))
    for rule in alert_rules(t)["groups"][0]["rules"]:
        exprs[rule["alert"]] = rule["expr"]
    assert exprs["MserveHighP99Latency"].endswith("> 0.05")
    assert exprs["MserveHighErrorRatio"].endswith("> 0.002")
    assert exprs["MserveQueueNearFull"].endswith("> 0.5")
    assert exprs["MserveInputDrift"].endswith("> 0.1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p99_seconds": 0},
        {"error_ratio": 1.5},
        {"queue_fraction": 0},
        {"drift_psi": -1},
        {"p99_for": "five minutes"},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AlertThresholds(**kwargs)


def test_scrape_config() -> None:
    config = prometheus_scrape_config(["a:8000", "[::1]:8001"], interval_s=0.5)
    assert config["global"]["scrape_interval"] == "500ms"
    assert config["rule_files"] == ["mserve-alerts.yaml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mserve"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["a:8000", "[::1]:8001"]}]
    assert prometheus_scrape_config(["a:1"])["global"]["scrape_interval"] == "15s"
    for bad in ([], ["http://a:8000"], ["a:8000/metrics"]):
        with pytest.raises(ValueError, match="target"):
            prometheus_scrape_config(bad)


def test_write_monitoring_assets(tmp_path: Path) -> None:
    out = tmp_path / "ops" / "monitoring"
    paths = write_monitoring_assets(out, targets=["h:9"])
    assert [p.name for p in paths] == [
        "grafana-dashboard.json",
        "mserve-alerts.yaml",
        "prometheus.yml",
    ]
    assert json.loads(paths[0].read_text()) == grafana_dashboard()
    assert yaml.safe_load(paths[1].read_text()) == alert_rules()
    assert yaml.safe_load(paths[2].read_text())["scrape_configs"][0]["static_configs"] == [
        {"targets": ["h:9"]}
    ]
    assert paths[1].read_text().startswith("groups:")  # key order kept


# --- the command line ------------------------------------------------------------------------


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mserve")
    deploy_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_the_files_with_the_thresholds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli(
        [
            *("deploy", "monitoring", str(tmp_path), "--p99-ms", "40", "--error-ratio", "0.05"),
            *("--target", "a:1", "--target", "b:2", "--json"),
        ]
    )
    assert args.run(args) == OK
    files = json.loads(capsys.readouterr().out)["files"]
    assert [Path(f).name for f in files] == [
        "grafana-dashboard.json",
        "mserve-alerts.yaml",
        "prometheus.yml",
    ]
    rules = yaml.safe_load((tmp_path / "mserve-alerts.yaml").read_text())["groups"][0]["rules"]
    assert rules[0]["expr"].endswith("> 0.04")
    assert rules[1]["expr"].endswith("> 0.05")
    scrape = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["a:1", "b:2"]


def test_cli_defaults_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(["deploy", "monitoring", str(tmp_path / "out")])
    assert args.run(args) == OK
    assert "wrote" in capsys.readouterr().err
    scrape = yaml.safe_load((tmp_path / "out" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    assert alert_rules() == yaml.safe_load((tmp_path / "out" / "mserve-alerts.yaml").read_text())

    args = _cli(["deploy", "monitoring", str(tmp_path / "bad"), "--queue-fraction", "2"])
    assert args.run(args) == USAGE
    assert "queue_fraction" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        _cli(["deploy"])  # a target is required


# --- promtool --------------------------------------------------------------------------------


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is required in CI (Debian package 'prometheus')")
    pytest.skip("promtool not installed (Debian package 'prometheus'); required when CI is set")


def _promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_rules_and_config(promtool: str, tmp_path: Path) -> None:
    write_monitoring_assets(tmp_path)
    assert "SUCCESS: 5 rules found" in _promtool(
        promtool, "check", "rules", tmp_path / "mserve-alerts.yaml"
    )
    _promtool(promtool, "check", "config", tmp_path / "prometheus.yml")  # loads the rules too


SICK = {"job": "mserve", "instance": "a:8000", "model": "digits", "version": "1"}
WELL = {"job": "mserve", "instance": "a:8000", "model": "iris", "version": "2"}


def _series(name: str, labels: dict[str, str], values: str, **more: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in (labels | more).items())
    return {"series": f"{name}{{{text}}}", "values": values}


def _sick_series() -> list[dict[str, str]]:
    bucket = "mserve_request_duration_seconds_bucket"
    http = {"protocol": "http"}
    return [
        _series("mserve_model_ready", SICK, "0x30"),
        _series("mserve_requests_total", SICK | http, "0+100x30", outcome="success"),
        _series("mserve_requests_total", SICK | http, "0+10x30", outcome="model_error"),
        _series("mserve_queue_depth", SICK, "9x30"),
        _series("mserve_queue_capacity", SICK, "10x30"),
        _series(bucket, SICK | http, "0+1x30", le="0.1"),  # 99 of 100 requests over 100 ms
        _series(bucket, SICK | http, "0+100x30", le="0.5"),
        _series(bucket, SICK | http, "0+100x30", le="+Inf"),
        _series("mserve_input_drift_psi", SICK, "0.6x30", input="x"),
    ]


def _healthy_series() -> list[dict[str, str]]:
    bucket = "mserve_request_duration_seconds_bucket"
    http = {"protocol": "http"}
    idle = {"model": "idle", "version": "1", "job": "mserve", "instance": "a:8000"}
    return [
        _series("mserve_model_ready", WELL, "1x30"),
        _series("mserve_requests_total", WELL | http, "0+100x30", outcome="success"),
        _series("mserve_requests_total", WELL | http, "0+50x30", outcome="bad_request"),
        _series("mserve_requests_total", WELL | http, "0+50x30", outcome="not_found"),
        _series("mserve_requests_total", idle | http, "5x30", outcome="model_error"),  # no traffic
        _series("mserve_requests_total", idle | http, "0x30", outcome="success"),
        _series("mserve_queue_depth", WELL, "7x30"),
        _series("mserve_queue_capacity", WELL, "10x30"),
        _series("mserve_queue_depth", idle, "50x30"),
        _series("mserve_queue_capacity", idle, "0x30"),  # unbounded: never "near full"
        _series(bucket, WELL | http, "0+99x30", le="0.01"),
        _series(bucket, WELL | http, "0+100x30", le="0.1"),
        _series(bucket, WELL | http, "0+100x30", le="+Inf"),
        _series("mserve_input_drift_psi", WELL, "0.05x30", input="x"),
    ]


Expected = dict[str, list[dict[str, dict[str, str]]]]


def _fires(labels: dict[str, str], summary: str, description: str) -> dict[str, dict[str, str]]:
    """One alert as promtool's exp_alerts has it: labels and the rendered annotations."""
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": description},
    }


def _case(series: list[dict[str, str]], at: str, expected: Expected) -> Any:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": expected.get(name, [])}
            for name in sorted(ALERTS)
        ],
    }


def _run_rule_tests(promtool: str, tmp_path: Path, rules: dict[str, Any], cases: list[Any]) -> None:
    (tmp_path / "mserve-alerts.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = {"rule_files": ["mserve-alerts.yaml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    _promtool(promtool, "test", "rules", tmp_path / "tests.yaml")


FAILED_ON_SERVER = "(model_error, internal, unavailable, overloaded, timeout)"


def test_promtool_alerts_fire_on_sick_series_only(promtool: str, tmp_path: Path) -> None:
    series = _sick_series() + _healthy_series()
    digits = {"model": "digits"}
    fired: Expected = {
        "MserveModelNotReady": [
            _fires(
                SICK | {"severity": "critical"},
                "Model digits is not ready",
                "Model digits version 1 on a:8000 does not serve (loading, unloaded or failed "
                "to load); value 0.",
            )
        ],
        "MserveHighErrorRatio": [
            _fires(
                digits | {"severity": "critical"},
                "Model digits fails 9.091% of requests",  # 10 of 110, client errors not counted
                f"9.091% of the requests to model digits failed on the server side "
                f"{FAILED_ON_SERVER} over the last 5m (threshold 1.00%).",
            )
        ],
        "MserveQueueNearFull": [
            _fires(
                SICK | {"severity": "warning"},
                "Queue of digits is 90% full",
                "The dynamic-batching queue of model digits version 1 is 90% full (threshold "
                "80%); requests over capacity are refused as overloaded.",
            )
        ],
        "MserveHighP99Latency": [
            _fires(
                digits | {"severity": "warning"},
                "p99 latency of digits above 250 ms",
                "The 99th percentile of end-to-end latency of model digits is 496ms over the "
                "last 5m (threshold 250 ms).",
            )
        ],
        "MserveInputDrift": [
            _fires(
                SICK | {"input": "x", "severity": "warning"},
                "Input x of digits drifted",
                "The population stability index of input x of model digits against its "
                "reference set is 0.600 (threshold 0.25).",
            )
        ],
    }
    cases = [
        _case(series, "20m", fired),
        _case(series, "30s", {}),  # every alert is still pending: its 'for' has not passed
        _case(_healthy_series(), "20m", {}),
    ]
    _run_rule_tests(promtool, tmp_path, alert_rules(), cases)


def test_promtool_thresholds_move_the_alerts(promtool: str, tmp_path: Path) -> None:
    # 7 of 10 in the queue and p99 near 10 ms are healthy at the defaults, not at these
    strict = AlertThresholds(p99_seconds=0.005, queue_fraction=0.5, p99_for="1m")
    fired: Expected = {
        "MserveQueueNearFull": [
            _fires(
                WELL | {"severity": "warning"},
                "Queue of iris is 70% full",
                "The dynamic-batching queue of model iris version 2 is 70% full (threshold "
                "50%); requests over capacity are refused as overloaded.",
            )
        ],
        "MserveHighP99Latency": [
            _fires(
                {"model": "iris", "severity": "warning"},
                "p99 latency of iris above 5 ms",
                "The 99th percentile of end-to-end latency of model iris is 10ms over the "
                "last 5m (threshold 5 ms).",
            )
        ],
    }
    _run_rule_tests(
        promtool, tmp_path, alert_rules(strict), [_case(_healthy_series(), "20m", fired)]
    )
