"""``mserve deploy kserve``: the InferenceService validates against KServe's CRD (unknown fields
refused) and its predictor's pod part against Kubernetes' Pod schema; it routes one port, as
KServe expects, runs the same server as the Kubernetes target, and refuses bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mserve.cli.exit_codes import OK, USAGE
from mserve.cli.main import main
from mserve.deploy.kserve import KServeSpec, inference_service
from mserve.deploy.pod import PodShape, Resources

#: the predictor's own fields (KServe's ComponentExtensionSpec); the rest is a PodSpec
EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}

COMBOS = {
    "defaults": [],
    "grpc-gpu-namespace-pvc-keys": [
        "--grpc", "--gpu", "1", "--namespace", "ml", "--models-pvc", "x",
        "--api-keys-secret", "s", "--min-replicas", "2", "--max-replicas", "3",
    ],
}  # fmt: skip


def _write(model_repo: Path, out: Path, argv: list[str]) -> dict[str, Any]:
    assert main(["deploy", "kserve", str(model_repo), "--out", str(out), *argv]) == OK
    return dict(yaml.safe_load((out / "inferenceservice.yaml").read_text()))


def _as_pod(isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor's PodSpec part as a Pod, for Kubernetes' own schema."""
    predictor = isvc["spec"]["predictor"]
    spec = {k: v for k, v in predictor.items() if k not in EXTENSION_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize("combo", list(COMBOS))
def test_the_inference_service_validates(
    combo: str, model_repo: Path, tmp_path: Path, validate_core: Any, validate_crd: Any
) -> None:
    isvc = _write(model_repo, tmp_path / "kserve", COMBOS[combo])
    validate_crd(isvc)
    validate_core(_as_pod(isvc))


def test_a_broken_inference_service_fails(validate_crd: Any) -> None:
    isvc = inference_service(KServeSpec("iris", PodShape("reg/iris:1")))
    isvc["spec"]["predictor"]["minReplica"] = 1  # a typo
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate_crd(isvc)
    isvc = inference_service(KServeSpec("iris", PodShape("reg/iris:1")))
    del isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"]
    with pytest.raises(jsonschema.ValidationError, match="containerPort"):
        validate_crd(isvc)
    with pytest.raises(jsonschema.ValidationError, match="predictor"):
        validate_crd({**isvc, "spec": {}})


def test_one_port_http_by_default_grpc_on_request() -> None:
    http = inference_service(KServeSpec("iris", PodShape("reg/iris:1")))
    assert http["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    container = http["spec"]["predictor"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"name": "http1", "containerPort": 8000, "protocol": "TCP"}]
    assert "--grpc-port" not in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    grpc = inference_service(KServeSpec("iris", PodShape("reg/iris:1"), grpc=True))
    container = grpc["spec"]["predictor"]["containers"][0]
    assert container["ports"] == [{"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]
    args = container["args"]
    assert args[args.index("--grpc-port") + 1] == "8001"


def test_the_same_server_as_the_kubernetes_target() -> None:
    shape = PodShape(
        "reg/iris:1",
        resources=Resources(gpus=1),
        models_pvc="store",
        api_keys_secret="keys",
    )
    predictor = inference_service(KServeSpec("iris", shape, namespace="ml", min_replicas=2))[
        "spec"
    ]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert predictor["terminationGracePeriodSeconds"] == 50
    assert predictor["securityContext"]["runAsUser"] == 10001
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu"
    container = predictor["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "keys"}
    assert "annotations" not in predictor  # no scrape annotations with API keys


def test_readme_calls_through_the_ingress(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "kserve"
    _write(model_repo, out, ["--namespace", "ml", "--name", "iris"])
    readme = (out / "README.md").read_text()
    assert "kubectl apply -f inferenceservice.yaml" in readme
    assert 'curl -H "Host: $SERVICE_HOSTNAME"' in readme
    assert "mserve bench http://$SERVICE_HOSTNAME:$INGRESS_PORT -m echo" in readme
    _write(model_repo, out, ["--grpc"])
    assert "--protocol v2-grpc" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--name", "9lives"], "starting with a letter"),
        (["--name", "a" * 60], "must fit in 63 characters"),
        (["--min-replicas", "0"], "min replicas must be 1 or more"),
        (["--unready-grace", "5"], "must be longer than 10 s"),
        (["--gpu", "-1"], "gpus must be 0 or more"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str],
    words: str,
    model_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "kserve"
    assert main(["deploy", "kserve", str(model_repo), "--out", str(out), *argv]) == USAGE
    err = capsys.readouterr().err
    assert err.startswith("mserve deploy kserve: error: ")
    assert words in err
    assert not out.exists()
