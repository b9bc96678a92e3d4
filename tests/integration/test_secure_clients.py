"""`mserve bench`, `mserve monitor` and the Prometheus config of `mserve deploy monitoring`
against a secured server (API keys, HTTPS and gRPC over TLS, a CA made in the test): they
succeed with the key and the CA, and say what to pass without them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pki import make_pki

from mserve.cli.exit_codes import exit_code_of
from mserve.errors import Forbidden, Unauthenticated
from mserve.server.process import ServerProcess, free_port

pytestmark = pytest.mark.integration

INFER_KEY = "bench-infer-0123456789abcdef"
METRICS_KEY = "bench-metrics-0123456789abcdef"
ALL_KEY = "bench-all-scopes-0123456789abcdef"  # inference, and metrics for the breakdown
KEYS_FILE = f"{INFER_KEY} inference\n{METRICS_KEY} metrics\n{ALL_KEY} *\n"
NEEDS_KEY = "the server needs an API key: pass -H 'Authorization: Bearer KEY'"
QUICK = ["--concurrency", "2", "--warmup", "0.2", "--window", "0.5", "--duration", "0.5"]
QUICK += ["-q", "--no-save", "--json"]


@dataclass
class Secured:
    """A server with keys, HTTPS on its HTTP port and TLS on its gRPC port."""

    process: ServerProcess
    grpc_port: int
    ca: Path

    def url(self, protocol: str) -> str:
        if protocol == "v2-grpc":
            return f"grpcs://127.0.0.1:{self.grpc_port}"
        return self.process.url  # https://127.0.0.1:PORT


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, place: Any, digits_model: Any
) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    place(root / "models", "digits", {1: digits_model.onnx}, config=digits_model.config)
    ca, cert, key = make_pki(root)
    keys = root / "keys.txt"
    keys.write_text(KEYS_FILE)
    grpc_port = free_port()
    args = ["--grpc-port", str(grpc_port), "--api-keys", str(keys)]
    args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    process = ServerProcess(root / "models", args=args, ca_file=str(ca))
    process.start(timeout=60)
    try:
        yield Secured(process, grpc_port, ca)
    finally:
        process.stop()


PROTOCOLS = ["v2-json", "v2-binary", "v2-grpc", "tfserving"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bench_with_the_key_and_the_ca(secured: Secured, protocol: str, mserve_cli: Any) -> None:
    proc = mserve_cli(
        "bench",
        secured.url(protocol),
        "-m",
        "digits",
        "--protocol",
        protocol,
        "-H",
        f"Authorization: Bearer {ALL_KEY}",
        "--ca-file",
        str(secured.ca),
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    step = result["steps"][0]
    assert step["error_count"] == 0, step["errors"]
    assert step["count"] > 0
    assert result["target"]["url"] == secured.url(protocol)
    if protocol != "tfserving":  # the statistics reads carried the key as well
        assert step["server"]["requests"] >= step["count"]
    assert ALL_KEY not in json.dumps(result["command"])  # saved runs keep no key
    assert "Authorization: ***" in result["command"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bench_without_a_key_says_what_to_pass(
    secured: Secured, protocol: str, mserve_cli: Any
) -> None:
    proc = mserve_cli(
        "bench",
        secured.url(protocol),
        "-m",
        "digits",
        "--protocol",
        protocol,
        "--ca-file",
        str(secured.ca),
        *QUICK,
    )
    assert proc.returncode == exit_code_of(Unauthenticated("")) != 0
    assert NEEDS_KEY in proc.stderr
    assert "'inference' scope" in proc.stderr  # the server's own reason comes along
    assert proc.stdout == ""


def test_bench_with_a_key_lacking_the_scope(secured: Secured, mserve_cli: Any) -> None:
    proc = mserve_cli(
        "bench",
        secured.url("v2-grpc"),
        "-m",
        "digits",
        "--protocol",
        "v2-grpc",
        "-H",
        f"authorization: Bearer {METRICS_KEY}",
        "--ca-file",
        str(secured.ca),
        *QUICK,
    )
    assert proc.returncode == exit_code_of(Forbidden("")) != 0
    assert "answered PERMISSION_DENIED" in proc.stderr
    assert "lacks the 'inference' scope" in proc.stderr
    assert METRICS_KEY not in proc.stderr


def test_bench_without_the_ca_names_the_options(secured: Secured, mserve_cli: Any) -> None:
    proc = mserve_cli("bench", secured.url("v2-json"), "-m", "digits", *QUICK)
    assert proc.returncode == 5, proc.stderr  # unavailable: the certificate is not trusted
    assert "certificate was not verified" in proc.stderr
    assert "--ca-file" in proc.stderr

    insecure = mserve_cli(
        "bench",
        secured.url("v2-grpc"),
        "-m",
        "digits",
        "--protocol",
        "v2-grpc",
        "-H",
        f"Authorization: Bearer {INFER_KEY}",
        "--insecure",
        *QUICK,
    )
    assert insecure.returncode == 0, insecure.stderr
    step = json.loads(insecure.stdout)["steps"][0]
    assert step["count"] > 0
    assert step["error_count"] == 0
    assert step["server"] is None  # an inference-only key reads no statistics


def test_monitor_with_a_metrics_key(secured: Secured, mserve_cli: Any) -> None:
    url = secured.process.url
    common = ["--count", "1", "--interval", "0.2", "--json", "--ca-file", str(secured.ca)]
    proc = mserve_cli("monitor", url, "-H", f"Authorization: Bearer {METRICS_KEY}", *common)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.splitlines()[0])
    assert line["url"] == f"{url}/metrics"
    assert "error" not in line or not line["error"]

    refused = mserve_cli("monitor", url, *common)
    assert refused.returncode == exit_code_of(Unauthenticated("")) != 0
    assert NEEDS_KEY in refused.stderr

    unscoped = mserve_cli("monitor", url, "-H", f"Authorization: Bearer {INFER_KEY}", *common)
    assert unscoped.returncode == exit_code_of(Forbidden("")) != 0
    assert "lacks the 'metrics' scope" in unscoped.stderr


def test_prometheus_scrapes_with_the_generated_config(
    secured: Secured, tmp_path: Path, mserve_cli: Any
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is missing (apt-get install prometheus; scripts/test does)")
    (tmp_path / "metrics.key").write_text(METRICS_KEY + "\n")
    target = f"127.0.0.1:{secured.process.port}"
    written = mserve_cli(
        *("deploy", "monitoring", str(tmp_path), "--target", target),
        *("--bearer-token-file", "metrics.key", "--ca-file", str(secured.ca)),
    )
    assert written.returncode == 0, written.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            health = _scrape_health(f"http://127.0.0.1:{port}", deadline=time.monotonic() + 30)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert health.get("health") == "up", (health, (tmp_path / "prometheus.log").read_text())
    assert health["scrapeUrl"] == f"https://{target}/metrics"


def _scrape_health(url: str, deadline: float) -> dict[str, Any]:
    """The mserve job's target as Prometheus' /api/v1/targets shows it, once it was scraped."""
    target: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/targets", timeout=2) as r:
                active = json.loads(r.read())["data"]["activeTargets"]
        except OSError:
            time.sleep(0.2)
            continue
        target = next((t for t in active if t["labels"].get("job") == "mserve"), {})
        if target.get("health") in ("up", "down"):
            return target
        time.sleep(0.2)
    return target
