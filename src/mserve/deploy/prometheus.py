"""Prometheus alert rules and a minimal scrape config over mserve's metrics (docs/metrics.md),
for open or secured servers (HTTPS, an API key): pure functions returning dicts ready for
``yaml.safe_dump``."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "ALERTS_FILE",
    "SERVER_FAILURES",
    "AlertThresholds",
    "ScrapeSecurity",
    "alert_rules",
    "prometheus_scrape_config",
]

ALERTS_FILE = "mserve-alerts.yaml"

#: Outcomes that are the server's fault (the client's are bad_request and not_found).
SERVER_FAILURES = ("model_error", "internal", "unavailable", "overloaded", "timeout")

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")  # Prometheus' duration syntax


@dataclass(frozen=True)
class AlertThresholds:
    """When the alerts of :func:`alert_rules` fire; ``*_for`` are Prometheus durations a
    condition must hold before its alert fires, ``rate_window`` the range of every rate()."""

    p99_seconds: float = 0.25
    error_ratio: float = 0.01
    queue_fraction: float = 0.8
    drift_psi: float = 0.25
    p99_for: str = "5m"
    error_for: str = "5m"
    queue_for: str = "1m"
    not_ready_for: str = "1m"
    drift_for: str = "10m"
    rate_window: str = "5m"

    def __post_init__(self) -> None:
        if not self.p99_seconds > 0:
            raise ValueError(f"p99_seconds must be > 0, got {self.p99_seconds}")
        for name in ("error_ratio", "queue_fraction"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not self.drift_psi > 0:
            raise ValueError(f"drift_psi must be > 0, got {self.drift_psi}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and not _DURATION.match(value):
                raise ValueError(f"{f.name} must be a Prometheus duration like 5m, got {value!r}")


def _num(value: float) -> str:
    return repr(float(value))


def _alert(
    name: str, expr: str, hold: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": hold,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def alert_rules(thresholds: AlertThresholds | None = None) -> dict:
    """A Prometheus rule file (``groups`` of ``rules``) with mserve's alerts:
    MserveHighP99Latency, MserveHighErrorRatio, MserveQueueNearFull, MserveModelNotReady and
    MserveInputDrift, at ``thresholds`` (the defaults of :class:`AlertThresholds` if None)."""
    t = thresholds or AlertThresholds()
    w = t.rate_window
    failures = "|".join(SERVER_FAILURES)
    p99_ms = f"{t.p99_seconds * 1000:g} ms"
    rules = [
        _alert(
            "MserveHighP99Latency",
            "histogram_quantile(0.99, sum by (le, model) "
            f"(rate(mserve_request_duration_seconds_bucket[{w}]))) > {_num(t.p99_seconds)}",
            t.p99_for,
            "warning",
            f"p99 latency of {{{{ $labels.model }}}} above {p99_ms}",
            "The 99th percentile of end-to-end latency of model {{ $labels.model }} is "
            f"{{{{ $value | humanizeDuration }}}} over the last {w} (threshold {p99_ms}).",
        ),
        _alert(
            "MserveHighErrorRatio",
            f'sum by (model) (rate(mserve_requests_total{{outcome=~"{failures}"}}[{w}]))'
            f" / (sum by (model) (rate(mserve_requests_total[{w}])) > 0) > {_num(t.error_ratio)}",
            t.error_for,
            "critical",
            "Model {{ $labels.model }} fails {{ $value | humanizePercentage }} of requests",
            "{{ $value | humanizePercentage }} of the requests to model {{ $labels.model }} "
            f"failed on the server side ({', '.join(SERVER_FAILURES)}) over the last {w} "
            f"(threshold {t.error_ratio:.2%}).",
        ),
        _alert(
            "MserveQueueNearFull",
            f"mserve_queue_depth / (mserve_queue_capacity > 0) > {_num(t.queue_fraction)}",
            t.queue_for,
            "warning",
            "Queue of {{ $labels.model }} is {{ $value | humanizePercentage }} full",
            "The dynamic-batching queue of model {{ $labels.model }} version "
            "{{ $labels.version }} is {{ $value | humanizePercentage }} full "
            f"(threshold {t.queue_fraction:.0%}); requests over capacity are refused as "
            "overloaded.",
        ),
        _alert(
            "MserveModelNotReady",
            "mserve_model_ready == 0",
            t.not_ready_for,
            "critical",
            "Model {{ $labels.model }} is not ready",
            "Model {{ $labels.model }} version {{ $labels.version }} on {{ $labels.instance }} "
            "does not serve (loading, unloaded or failed to load); value {{ $value }}.",
        ),
        _alert(
            "MserveInputDrift",
            f"mserve_input_drift_psi > {_num(t.drift_psi)}",
            t.drift_for,
            "warning",
            "Input {{ $labels.input }} of {{ $labels.model }} drifted",
            "The population stability index of input {{ $labels.input }} of model "
            '{{ $labels.model }} against its reference set is {{ $value | printf "%.3f" }} '
            f"(threshold {t.drift_psi:g}).",
        ),
    ]
    return {"groups": [{"name": "mserve", "rules": rules}]}


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"interval must be at least 1 ms, got {seconds} s")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class ScrapeSecurity:
    """How Prometheus reaches a secured server: over ``scheme`` (https verified by the CA
    certificates of ``ca_file``, or the system's), sending the API key held in
    ``bearer_token_file`` as ``Authorization: Bearer KEY``. Paths are as Prometheus sees them;
    a relative one is relative to the directory of prometheus.yml."""

    scheme: str = "http"
    bearer_token_file: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, got {self.scheme!r}")
        if self.ca_file is not None and self.scheme != "https":
            raise ValueError("a CA file verifies an https server; set the scheme to https")
        for name in ("bearer_token_file", "ca_file"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{name} must be a path, got {value!r}")

    def scrape_fields(self) -> dict[str, Any]:
        """The fields of a scrape_config that say so (none for plain http without a key)."""
        out: dict[str, Any] = {}
        if self.scheme == "https":
            out["scheme"] = "https"
        if self.bearer_token_file is not None:
            out["authorization"] = {"type": "Bearer", "credentials_file": self.bearer_token_file}
        if self.ca_file is not None:
            out["tls_config"] = {"ca_file": self.ca_file}
        return out


def prometheus_scrape_config(
    targets: list[str], interval_s: float = 15, security: ScrapeSecurity | None = None
) -> dict:
    """A minimal prometheus.yml: job ``mserve`` scraping ``/metrics`` of ``targets``
    (``HOST:PORT``, no scheme) every ``interval_s`` seconds, over https and with an API key
    when ``security`` says so, with the rules of :func:`alert_rules` loaded from
    ``mserve-alerts.yaml`` beside it."""
    if not targets:
        raise ValueError("at least one target HOST:PORT is needed")
    for target in targets:
        if not re.fullmatch(r"[^\s/:]+(:\d+)?|\[[0-9a-fA-F:.]+\](:\d+)?", target):
            raise ValueError(f"target must be HOST:PORT without scheme or path, got {target!r}")
    interval = _duration(interval_s)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [ALERTS_FILE],
        "scrape_configs": [
            {
                "job_name": "mserve",
                "metrics_path": "/metrics",
                **(security.scrape_fields() if security is not None else {}),
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
