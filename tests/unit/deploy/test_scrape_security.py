"""prometheus.yml for a secured mserve (HTTPS, an API key with the metrics scope): the fields
Prometheus documents, the command line that writes them, and ``promtool check config``."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mserve.cli import deploy as deploy_cli
from mserve.cli.exit_codes import OK, USAGE
from mserve.deploy.prometheus import ScrapeSecurity, prometheus_scrape_config


def _job(security: ScrapeSecurity | None) -> dict:
    return prometheus_scrape_config(["h:8000"], security=security)["scrape_configs"][0]


def test_security_fields_of_the_scrape_job() -> None:
    job = _job(ScrapeSecurity("https", "/etc/mserve/metrics.key", "/etc/mserve/ca.pem"))
    assert job["scheme"] == "https"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/mserve/metrics.key"}
    assert job["tls_config"] == {"ca_file": "/etc/mserve/ca.pem"}
    assert job["static_configs"] == [{"targets": ["h:8000"]}]
    key_only = _job(ScrapeSecurity(bearer_token_file="k"))
    assert "scheme" not in key_only
    assert "tls_config" not in key_only
    assert _job(ScrapeSecurity()) == _job(None)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"scheme": "grpc"}, "http or https"),
        ({"scheme": "http", "ca_file": "ca.pem"}, "set the scheme to https"),
        ({"bearer_token_file": " "}, "must be a path"),
    ],
)
def test_bad_security_is_refused(kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ScrapeSecurity(**kwargs)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mserve")
    deploy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", "monitoring", *argv])
    return int(args.run(args))


def test_cli_writes_a_secured_scrape_config(tmp_path: Path) -> None:
    out = tmp_path / "ops"
    argv = [str(out), "--target", "a:8000", "--bearer-token-file", "metrics.key"]
    assert _run([*argv, "--ca-file", "ca.pem"]) == OK
    job = yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["scheme"] == "https"  # implied by --ca-file
    assert job["authorization"]["credentials_file"] == "metrics.key"
    assert job["tls_config"] == {"ca_file": "ca.pem"}
    assert job["static_configs"] == [{"targets": ["a:8000"]}]

    assert _run([str(tmp_path / "bad"), "--scheme", "http", "--ca-file", "ca.pem"]) == USAGE
    assert not (tmp_path / "bad").exists()  # refused before anything is written


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is required in CI (Debian package 'prometheus')")
    pytest.skip("promtool not installed (Debian package 'prometheus'); required when CI is set")


def test_promtool_accepts_the_secured_config(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "metrics.key").write_text("0123456789abcdef0123\n")
    (tmp_path / "ca.pem").write_text("")  # promtool checks that the file is there
    argv = [str(tmp_path), "--scheme", "https", "--bearer-token-file", "metrics.key"]
    assert _run([*argv, "--ca-file", "ca.pem"]) == OK
    check = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "metrics.key").unlink()
    check = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode != 0  # the paths are real to promtool: they resolve beside the file
    assert "metrics.key" in check.stdout + check.stderr
