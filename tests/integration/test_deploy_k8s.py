"""``mserve deploy kubernetes / kserve / tfserving`` as a user runs them (``python -m mserve``),
and the Kubernetes folder rendered by the real ``kubectl kustomize`` (offline): every resource
comes out, with the namespace applied."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "PrometheusRule",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, onnx_factory: Any, place: Any) -> Path:
    root = tmp_path_factory.mktemp("deploy") / "models"
    place(root, "iris", {1: onnx_factory.identity("FP32", (-1, 4))})
    return root


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail("kubectl is required in CI: it renders the kustomization (kubectl kustomize)")
    pytest.skip("kubectl not installed; required when CI is set")


def _kustomize(kubectl: str, folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize(
    "argv",
    [
        ["--namespace", "ml"],
        ["--namespace", "serving", "--gpu", "1", "--models-pvc", "x", "--api-keys-secret", "s"],
        ["--replicas", "1", "--no-custom-metric"],
    ],
)
def test_kustomize_renders_every_resource(
    argv: list[str], repo: Path, tmp_path: Path, kubectl: str, mserve_cli: Any
) -> None:
    out = tmp_path / "k8s"
    result = mserve_cli("deploy", "kubernetes", str(repo), "--out", str(out), "--json", *argv)
    assert result.returncode == 0, result.stderr
    files = [Path(f) for f in json.loads(result.stdout)["files"]]
    assert all(f.is_file() for f in files)
    docs = _kustomize(kubectl, out)
    assert {d["kind"] for d in docs} == KINDS
    assert all(d["metadata"]["name"] == "models" for d in docs)
    namespace = argv[1] if argv[0] == "--namespace" else None
    for doc in docs:
        assert doc["metadata"].get("namespace") == namespace, doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mserve"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    # the kustomization's labels stay off the selector, which a Deployment cannot change
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "models"}}


def test_kustomize_without_the_prometheus_operator(
    repo: Path, tmp_path: Path, kubectl: str, mserve_cli: Any
) -> None:
    out = tmp_path / "k8s"
    result = mserve_cli(
        "deploy", "kubernetes", str(repo), "--out", str(out), "--no-prometheus-operator"
    )
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in _kustomize(kubectl, out)}
    assert kinds == KINDS - {"ServiceMonitor", "PrometheusRule"}
    assert not (out / "servicemonitor.yaml").exists()


def test_usage_errors_say_what_was_expected(repo: Path, tmp_path: Path, mserve_cli: Any) -> None:
    out = str(tmp_path / "out")
    result = mserve_cli("deploy", "kubernetes", str(repo), "--out", out, "--unready-grace", "8")
    assert result.returncode == 2
    assert "the grace must be longer than 10 s" in result.stderr
    result = mserve_cli("deploy", "kserve", str(tmp_path), "--out", out)
    assert result.returncode == 2
    assert "holds no model folder" in result.stderr
    model = repo / "iris" / "1" / "model.onnx"
    result = mserve_cli("deploy", "tfserving", str(model), "--out", out)
    assert result.returncode == 2
    assert "TF Serving serves TensorFlow models only" in result.stderr
    assert "'mserve serve'" in result.stderr
    result = mserve_cli("deploy", "kubernetes", str(repo))
    assert result.returncode == 2
    assert "--out" in result.stderr


def test_kserve_writes_its_files(repo: Path, tmp_path: Path, mserve_cli: Any) -> None:
    out = tmp_path / "kserve"
    result = mserve_cli("deploy", "kserve", str(repo), "--out", str(out), "--json", "--grpc")
    assert result.returncode == 0, result.stderr
    files = sorted(Path(f).name for f in json.loads(result.stdout)["files"])
    assert files == ["README.md", "inferenceservice.yaml"]
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["containers"][0]["ports"][0]["name"] == "h2c"


def test_help_lists_the_files_and_examples(mserve_cli: Any) -> None:
    for target, needed in (
        ("kubernetes", "kubectl apply -k"),
        ("kserve", "inferenceservice.yaml"),
        ("tfserving", "models.config"),
    ):
        result = mserve_cli("deploy", target, "--help")
        assert result.returncode == 0
        assert "files written into OUT" in result.stdout
        assert needed in result.stdout
