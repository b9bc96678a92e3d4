"""``mserve deploy kubernetes``: every manifest it writes is valid for Kubernetes (core kinds
against its schemas, ServiceMonitor and PrometheusRule against their CRDs, unknown fields
refused), says what the server needs (probes, security, shutdown, resources, scaling), and bad
input is refused with a usage error saying what was expected."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mserve.cli.exit_codes import FAILURE, OK, USAGE
from mserve.cli.main import main
from mserve.deploy.container import ServeShape
from mserve.deploy.kubernetes import (
    ADAPTER_FILE,
    INFLIGHT_METRIC,
    KubernetesSpec,
    kubernetes_manifests,
    render_kubernetes,
)
from mserve.deploy.pod import PodShape, Resources, quantity

CORE = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
CUSTOM = {"ServiceMonitor", "PrometheusRule"}

COMBOS = {
    "defaults": [],
    "gpu-namespace-pvc-keys": [
        "--gpu", "1", "--namespace", "ml", "--models-pvc", "x", "--api-keys-secret", "s",
    ],
    "one-replica": ["--replicas", "1"],
    "tuned": [
        "--workers", "4", "--cpu", "500m", "--cpu-limit", "2", "--memory-limit", "none",
        "--no-custom-metric", "--monitor-label", "release=kube-prometheus-stack",
        "--serve-arg=--request-timeout=2", "--target-inflight", "2.5",
    ],
}  # fmt: skip


def _write(model_repo: Path, out: Path, argv: list[str]) -> dict[str, Any]:
    """Run the command; return file name -> parsed YAML of every resource the kustomization
    lists, plus the kustomization itself under its own name."""
    code = main(["deploy", "kubernetes", str(model_repo), "--out", str(out), *argv])
    assert code == OK
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    docs = {name: yaml.safe_load((out / name).read_text()) for name in kustomization["resources"]}
    return {**docs, "kustomization.yaml": kustomization}


def _spec(**kw: Any) -> KubernetesSpec:
    pod_kw = {
        k: kw.pop(k) for k in ("serve", "resources", "models_pvc", "api_keys_secret") if k in kw
    }
    return KubernetesSpec(name="iris", pod=PodShape(image="reg/iris:1", **pod_kw), **kw)


def _by_kind(spec: KubernetesSpec) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in kubernetes_manifests(spec).values()}


def _container(spec: KubernetesSpec) -> dict[str, Any]:
    return _by_kind(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("combo", list(COMBOS))
def test_every_manifest_validates(
    combo: str, model_repo: Path, tmp_path: Path, validate_core: Any, validate_crd: Any
) -> None:
    docs = _write(model_repo, tmp_path / "k8s", COMBOS[combo])
    kinds = set()
    for name, doc in docs.items():
        if name == "kustomization.yaml":
            continue
        kinds.add(doc["kind"])
        if doc["kind"] in CORE:
            validate_core(doc)
        else:
            validate_crd(doc)
    assert kinds == CORE | CUSTOM


def test_broken_manifests_fail_validation(validate_core: Any, validate_crd: Any) -> None:
    docs = _by_kind(_spec(api_keys_secret="s"))
    deployment = docs["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="livenessProbes"):
        validate_core(deployment)
    hpa = docs["HorizontalPodAutoscaler"]
    del hpa["spec"]["maxReplicas"]
    with pytest.raises(kubernetes_validate.ValidationError, match="maxReplicas"):
        validate_core(hpa)

    monitor = docs["ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["bearerToken"] = "k"  # no such field
    with pytest.raises(jsonschema.ValidationError, match="bearerToken"):
        validate_crd(monitor)
    del monitor["spec"]["endpoints"][0]["bearerToken"]
    monitor["spec"]["endpoints"][0]["scheme"] = "grpc"  # not in the enum
    with pytest.raises(jsonschema.ValidationError, match="grpc"):
        validate_crd(monitor)
    del monitor["spec"]["selector"]  # required
    with pytest.raises(jsonschema.ValidationError, match="selector"):
        validate_crd(monitor)
    rule = docs["PrometheusRule"]
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError, match="expr"):
        validate_crd(rule)
    rule = _by_kind(_spec())["PrometheusRule"]
    rule["metadata"]["nmae"] = "x"  # ObjectMeta is checked too
    with pytest.raises(kubernetes_validate.ValidationError, match="nmae"):
        validate_crd(rule)


def test_probes_and_ports() -> None:
    container = _container(_spec())
    assert container["args"][:2] == ["serve", "/models"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    live, ready, startup = (
        container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe")
    )
    assert (live["path"], ready["path"], startup["path"]) == (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/health/live",
    )
    assert live["port"] == ready["port"] == startup["port"] == 8002  # off the inference port
    assert container["readinessProbe"]["periodSeconds"] == 5
    # five minutes of model loading before liveness counts
    startup_probe = container["startupProbe"]
    assert startup_probe["periodSeconds"] * startup_probe["failureThreshold"] == 300
    no_metrics_port = _spec(serve=ServeShape(unready_grace_s=15, metrics_port=False))
    assert _container(no_metrics_port)["readinessProbe"]["httpGet"]["port"] == 8000
    assert "--metrics-port" not in _container(no_metrics_port)["args"]
    monitor = _by_kind(no_metrics_port)["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    service = _by_kind(_spec())["Service"]["spec"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
        "metrics": (8002, "metrics"),
    }
    assert service["type"] == "ClusterIP"
    grpc_port = next(p for p in service["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"


def test_security_context_and_shutdown() -> None:
    pod = _by_kind(_spec())["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False
    # the root filesystem is read-only: /tmp is the server's one writable place
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    # 15 s unready, 30 s of drain, 5 s to exit
    assert pod["terminationGracePeriodSeconds"] == 50
    args = container["args"]
    assert args[args.index("--unready-grace") + 1] == "15"
    assert args[args.index("--drain-timeout") + 1] == "30"
    slow = _spec(serve=ServeShape(unready_grace_s=20, drain_timeout_s=120.5))
    assert (
        _by_kind(slow)["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        == 146
    )  # ceil(140.5) + 5


def test_args_resources_gpu_and_volumes() -> None:
    spec = _spec(
        serve=ServeShape(workers=3, unready_grace_s=12, extra_args=("--request-timeout=2",)),
        resources=Resources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi", gpus=2),
        models_pvc="model-store",
    )
    docs = _by_kind(spec)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[args.index("--workers") + 1] == "3"
    assert args[-1] == "--request-timeout=2"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 2},
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert claim == {"claimName": "model-store", "readOnly": True}
    # defaults: no GPU, no claim (the models are in the image), no CPU limit
    default_pod = _by_kind(_spec())["Deployment"]["spec"]["template"]["spec"]
    assert "tolerations" not in default_pod
    assert [v["name"] for v in default_pod["volumes"]] == ["tmp"]
    assert default_pod["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }


def test_api_keys_from_the_secret() -> None:
    docs = _by_kind(_spec(api_keys_secret="mserve-keys"))
    template = docs["Deployment"]["spec"]["template"]
    assert template["spec"]["containers"][0]["env"] == [
        {
            "name": "MSERVE_API_KEYS",
            "valueFrom": {"secretKeyRef": {"name": "mserve-keys", "key": "keys"}},
        }
    ]
    endpoint = docs["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "mserve-keys", "key": "metrics-key"},
    }
    # annotation-based scrapers cannot send a key: no annotations invite them
    assert "annotations" not in template["metadata"]
    open_template = _by_kind(_spec())["Deployment"]["spec"]["template"]
    assert open_template["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert "env" not in open_template["spec"]["containers"][0]


def test_autoscaler_and_disruption_budget() -> None:
    docs = _by_kind(_spec(min_replicas=3, target_cpu=60, target_inflight=2.5))
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    cpu, inflight = hpa["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    assert inflight == {
        "type": "Pods",
        "pods": {
            "metric": {"name": INFLIGHT_METRIC},
            "target": {"type": "AverageValue", "averageValue": "2.5"},
        },
    }
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    # the autoscaler owns the count
    assert "replicas" not in docs["Deployment"]["spec"]
    cpu_only = _by_kind(_spec(target_inflight=None))["HorizontalPodAutoscaler"]["spec"]
    assert [m["type"] for m in cpu_only["metrics"]] == ["Resource"]
    assert ADAPTER_FILE not in render_kubernetes(_spec(target_inflight=None), ["iris"])
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert "minAvailable" not in pdb
    assert pdb["selector"] == docs["Deployment"]["spec"]["selector"]
    one = _by_kind(_spec(min_replicas=1))
    assert one["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1  # never blocks a drain
    assert one["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 4


def test_monitoring_objects_and_selectors() -> None:
    docs = _by_kind(_spec(monitor_labels=(("release", "prom"),)))
    selector = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["Deployment"]["spec"]["template"]["metadata"]["labels"] == selector
    assert docs["Service"]["spec"]["selector"] == selector
    assert docs["Service"]["metadata"]["labels"].items() >= selector.items()
    monitor = docs["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    rules = docs["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert "MserveHighP99Latency" in {r["alert"] for r in rules}
    assert docs["PrometheusRule"]["metadata"]["labels"]["release"] == "prom"
    without = kubernetes_manifests(_spec(prometheus_operator=False))
    assert list(without) == ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]


def test_folder_kustomization_and_adapter_rules(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    argv = ["--namespace", "ml", "--name", "iris", "--image", "reg.example/iris:2"]
    docs = _write(model_repo, out, argv)
    kustomization = docs["kustomization.yaml"]
    assert kustomization["namespace"] == "ml"
    assert ADAPTER_FILE not in kustomization["resources"]
    assert kustomization["labels"] == [
        {"pairs": {"app.kubernetes.io/part-of": "mserve"}, "includeSelectors": False}
    ]
    assert "not listed" in (out / "kustomization.yaml").read_text()
    assert docs["deployment.yaml"]["metadata"]["namespace"] == "ml"
    container = docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example/iris:2"
    adapter_text = (out / ADAPTER_FILE).read_text()
    assert adapter_text.startswith("# Not a Kubernetes object")
    rule = yaml.safe_load(adapter_text)["rules"][0]
    assert rule["name"]["as"] == INFLIGHT_METRIC
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    readme = (out / "README.md").read_text()
    for needed in (
        "kubectl apply -k",
        "metrics-server",
        "prometheus-operator",
        "prometheus-adapter",
    ):
        assert needed in readme
    assert "mserve bench http://127.0.0.1:8000 -m echo" in readme  # the repository's models


def test_default_name_and_image(model_repo: Path, tmp_path: Path) -> None:
    docs = _write(model_repo, tmp_path / "k8s", [])
    deployment = docs["deployment.yaml"]
    assert deployment["metadata"]["name"] == "iris-repo"  # the repository folder's name
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("iris-repo:")
    assert "namespace" not in docs["kustomization.yaml"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--unready-grace", "10"], "must be longer than 10 s"),
        (["--cpu", "lots"], "expected a number with an optional suffix"),
        (["--memory", "4Gi"], "memory limit 2Gi is below the memory request 4Gi"),
        (["--serve-arg=--port=9000"], "--port is set by the deployment itself"),
        (["--name", "Iris_Model"], "expected lowercase letters, digits and '-'"),
        (["--min-replicas", "5", "--max-replicas", "2"], "must be at least the min replicas"),
        (["--monitor-label", "release"], "expected KEY=VALUE"),
        (["--namespace", "ML"], "namespace 'ML' is not valid"),
        (["--api-keys-secret", "Keys!"], "is not a Kubernetes object name"),
        (["--target-inflight", "0"], "in-flight target must be above 0"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str],
    words: str,
    model_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "k8s"
    code = main(["deploy", "kubernetes", str(model_repo), "--out", str(out), *argv])
    assert code == USAGE
    err = capsys.readouterr().err
    assert err.startswith("mserve deploy kubernetes: error: ")
    assert words in err
    assert not out.exists()  # refused before anything is written


def test_bad_repositories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "k8s")
    assert main(["deploy", "kubernetes", str(tmp_path / "nowhere"), "--out", out]) == USAGE
    assert "expected a model repository" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["deploy", "kubernetes", str(empty), "--out", out]) == USAGE
    assert "holds no model folder" in capsys.readouterr().err


def test_a_repository_name_that_cannot_name_objects(
    model_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "2024_models"
    shutil.copytree(model_repo, odd)
    code = main(["deploy", "kubernetes", str(odd), "--out", str(tmp_path / "k8s")])
    assert code == USAGE
    err = capsys.readouterr().err
    assert "'2024-models'" in err
    assert "pass --name NAME" in err
    assert (
        main(["deploy", "kubernetes", str(odd), "--out", str(tmp_path / "k8s"), "--name", "m"])
        == OK
    )


def test_unwritable_output_is_a_failure(
    model_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["deploy", "kubernetes", str(model_repo), "--out", str(blocker)]) == FAILURE
    assert "cannot write" in capsys.readouterr().err


def test_json_lists_the_files(
    model_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k8s"
    assert main(["deploy", "kubernetes", str(model_repo), "--out", str(out), "--json"]) == OK
    files = json.loads(capsys.readouterr().out)["files"]
    assert sorted(Path(f).name for f in files) == sorted(
        [
            "deployment.yaml",
            "service.yaml",
            "hpa.yaml",
            "pdb.yaml",
            "servicemonitor.yaml",
            "prometheusrule.yaml",
            "kustomization.yaml",
            ADAPTER_FILE,
            "README.md",
        ]
    )
    assert all(Path(f).is_file() for f in files)


def test_quantities() -> None:
    assert quantity("500m", "cpu") == Decimal("0.5")
    assert quantity("2", "cpu") == 2
    assert quantity("1.5Gi", "memory") == Decimal("1.5") * 2**30
    assert quantity("512M", "memory") == 512 * 10**6
    for bad in ("", "1.5 Gi", "-1", "1GB", "lots"):
        with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
            quantity(bad, "memory")
    with pytest.raises(ValueError, match="cpu limit 500m is below the cpu request 1"):
        Resources(cpu_limit="500m")
    with pytest.raises(ValueError, match="must be above 0"):
        Resources(cpu="0")
