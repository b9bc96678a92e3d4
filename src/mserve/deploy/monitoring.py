"""Monitoring assets over the metrics of ``GET /metrics`` (docs/metrics.md), written as
files: a Grafana dashboard (:mod:`mserve.deploy.grafana`), Prometheus alert rules and a minimal
scrape config (:mod:`mserve.deploy.prometheus`). Nothing here runs a process or opens a socket.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from mserve.deploy.grafana import grafana_dashboard
from mserve.deploy.prometheus import (
    ALERTS_FILE,
    SERVER_FAILURES,
    AlertThresholds,
    ScrapeSecurity,
    alert_rules,
    prometheus_scrape_config,
)

__all__ = [
    "ALERTS_FILE",
    "DASHBOARD_FILE",
    "PROMETHEUS_FILE",
    "SERVER_FAILURES",
    "AlertThresholds",
    "ScrapeSecurity",
    "alert_rules",
    "grafana_dashboard",
    "prometheus_scrape_config",
    "write_monitoring_assets",
]

DASHBOARD_FILE = "grafana-dashboard.json"
PROMETHEUS_FILE = "prometheus.yml"


def write_monitoring_assets(
    out: Path,
    thresholds: AlertThresholds | None = None,
    targets: Sequence[str] | None = None,
    security: ScrapeSecurity | None = None,
) -> list[Path]:
    """Write grafana-dashboard.json, mserve-alerts.yaml and prometheus.yml into ``out``
    (created if missing, files replaced); returns their paths in that order. ``targets``
    defaults to ``127.0.0.1:8000``; ``security``: how Prometheus reaches a server with TLS or
    API keys."""
    scrape = prometheus_scrape_config(list(targets or ["127.0.0.1:8000"]), security=security)
    texts = {
        DASHBOARD_FILE: json.dumps(grafana_dashboard(), indent=2) + "\n",
        ALERTS_FILE: yaml.safe_dump(alert_rules(thresholds), sort_keys=False),
        PROMETHEUS_FILE: yaml.safe_dump(scrape, sort_keys=False),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
