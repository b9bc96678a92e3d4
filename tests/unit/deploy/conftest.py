"""What the deployment tests share: a tiny model repository, and the validators of generated
manifests, core kinds against Kubernetes' own schemas (kubernetes-validate, strict) and custom
kinds against the openAPIV3Schema of their CRDs in tests/data/crds/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "data" / "crds"
#: the oldest Kubernetes the manifests are checked against, and the newest the package ships
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
}

Validate = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory, onnx_factory: Any, place: Any) -> Path:
    """A repository 'iris-repo' with two models: iris (version 1) and echo (versions 1, 2)."""
    root = tmp_path_factory.mktemp("deploy") / "iris-repo"
    place(root, "iris", {1: onnx_factory.identity("FP32", (-1, 4))})
    place(root, "echo", {1: onnx_factory.add_const(1.0), 2: onnx_factory.add_const(2.0)})
    return root


@pytest.fixture(scope="session")
def validate_core() -> Validate:
    """validate_core(manifest): checks a core-kind manifest against Kubernetes' schemas of the
    oldest and newest versions in K8S_VERSIONS, unknown fields refused; raises otherwise."""

    def validate(manifest: dict[str, Any]) -> None:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)

    return validate


def _strict(schema: Any) -> Any:
    """A CRD schema with unknown fields refused where Kubernetes refuses them: every object
    that lists its properties and neither declares additionalProperties nor preserves unknown
    fields (what the API server prunes, and kubectl's strict field validation rejects)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of ``kind`` at ``version`` from its CRD in tests/data/crds."""
    crd = yaml.safe_load((CRDS / CRD_FILES[kind]).read_text())
    assert crd["spec"]["names"]["kind"] == kind
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return _strict(entry["schema"]["openAPIV3Schema"])
    raise LookupError(f"{CRD_FILES[kind]} has no version {version}")


@pytest.fixture(scope="session")
def validate_crd(validate_core: Validate) -> Validate:
    """validate_crd(manifest): checks a custom-kind manifest against its CRD's schema (group and
    version from apiVersion) and its metadata against Kubernetes' ObjectMeta; raises
    jsonschema.ValidationError (or kubernetes_validate's) otherwise."""

    def validate(manifest: dict[str, Any]) -> None:
        group, _, version = manifest["apiVersion"].partition("/")
        schema = crd_schema(manifest["kind"], version)
        crd = yaml.safe_load((CRDS / CRD_FILES[manifest["kind"]]).read_text())
        assert crd["spec"]["group"] == group
        jsonschema.Draft202012Validator(schema).validate(manifest)
        # the CRD leaves metadata to the API server, which checks it as any ObjectMeta
        validate_core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]})

    return validate
