"""``mserve deploy bench-job``: a Job that Kubernetes' own schema accepts (strict), N indexed
pods at once, each running 1/N of the load with the flags ``mserve bench`` parses, non-root on a
read-only root; and bad options refused with exit status 2 before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mserve.cli.exit_codes import OK, USAGE
from mserve.cli.main import main, parser
from mserve.deploy.benchjob import BenchJob, job_manifest
from mserve.deploy.benchjob_readme import readme
from mserve.deploy.container import USER_ID

TARGET = "http://mserve.ml.svc:8000"


def deploy(tmp_path: Path, *options: str) -> int:
    return main(["deploy", "bench-job", "--target", TARGET, "--out", str(tmp_path), *options])


def written(tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load((tmp_path / "bench-job.yaml").read_text())


def container(job: dict[str, Any]) -> dict[str, Any]:
    [c] = job["spec"]["template"]["spec"]["containers"]
    return c


def bench_options(job: dict[str, Any], index: int = 0) -> Any:
    """The pod's arguments as ``mserve bench`` parses them, the index filled in as Kubernetes
    would."""
    c = container(job)
    assert c["command"] == ["mserve"]
    args = [a.replace("$(WORKER_INDEX)", str(index)) for a in c["args"]]
    return parser().parse_args(args)


def validate(job: dict[str, Any]) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(job, version, strict=True)


def test_the_job_validates_and_runs_n_indexed_pods_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = deploy(tmp_path, "-m", "digits", "--workers", "4", "--concurrency", "8,32", "--json")
    assert code == OK
    files = json.loads(capsys.readouterr().out)["files"]
    assert [Path(f).name for f in files] == ["bench-job.yaml", "README.md"]
    job = written(tmp_path)
    validate(job)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    options = bench_options(job, index=3)
    assert options.command == "bench"
    assert options.url == TARGET
    assert options.model == "digits"
    assert options.concurrency == "2,8"  # a quarter of the total each
    assert options.seed == 3  # each pod its own seed
    assert options.duration == 60.0
    assert (options.json, options.quiet, options.no_save) == (True, True, True)
    assert options.output is None


def test_the_pods_run_non_root_on_a_read_only_root(tmp_path: Path) -> None:
    assert deploy(tmp_path, "-m", "digits", "--workers", "2", "--concurrency", "2") == OK
    job = written(tmp_path)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == USER_ID
    assert pod["automountServiceAccountToken"] is False
    c = container(job)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    # the index reaches the arguments through the downward API
    [index] = [e for e in c["env"] if e["name"] == "WORKER_INDEX"]
    path = index["valueFrom"]["fieldRef"]["fieldPath"]
    assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_the_pods_spread_over_nodes(tmp_path: Path) -> None:
    assert deploy(tmp_path, "-m", "digits", "--workers", "2", "--concurrency", "2") == OK
    job = written(tmp_path)
    [term] = job["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_results_on_a_claim_secrets_and_a_namespace(tmp_path: Path) -> None:
    code = deploy(
        tmp_path,
        *("-m", "digits", "--protocol", "v2-binary", "--workers", "3"),
        *("--rate", "1000,100000", "--arrival", "poisson", "--namespace", "ml"),
        *("--results-pvc", "bench-results", "--api-key-secret", "mserve-keys:bench"),
        *("--bench-arg", "--workers 2", "--image", "registry.example/mserve:1", "--cpu", "2"),
    )
    assert code == OK
    job = written(tmp_path)
    validate(job)
    assert job["metadata"]["namespace"] == "ml"
    options = bench_options(job, index=1)
    rates = [float(r) for r in options.rate.split(",")]
    assert [math.fsum([r] * 3) for r in rates] == pytest.approx([1000, 100000], rel=1e-12)
    assert options.arrival == "poisson"
    assert options.workers == 2
    assert options.output == Path("/results/worker-1.json")
    assert not options.json
    assert options.headers == ["Authorization: Bearer $(MSERVE_API_KEY)"]
    c = container(job)
    assert c["image"] == "registry.example/mserve:1"
    assert {"name": "results", "mountPath": "/results"} in c["volumeMounts"]
    claim = {"name": "results", "persistentVolumeClaim": {"claimName": "bench-results"}}
    assert claim in job["spec"]["template"]["spec"]["volumes"]
    [key] = [e for e in c["env"] if e["name"] == "MSERVE_API_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "mserve-keys", "key": "bench"}
    text = (tmp_path / "README.md").read_text()
    assert "mserve results merge results/worker-*.json" in text
    assert "kubectl -n ml cp mserve-bench-fetch:/results results" in text


def test_the_readme_says_how_to_collect_and_merge() -> None:
    job = BenchJob(target=TARGET, model="digits", workers=3, concurrency="6")
    text = readme(job)
    assert "kubectl apply -f bench-job.yaml" in text
    assert "$(seq 0 2)" in text
    assert "batch.kubernetes.io/job-completion-index=$i --tail=-1 > worker-$i.json" in text
    assert "mserve results merge worker-*.json" in text
    assert job_manifest(job)["spec"]["activeDeadlineSeconds"] == job.deadline_s()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-m", "digits", "--workers", "3", "--concurrency", "4"], "does not split evenly"),
        (["-m", "digits", "--workers", "2"], "give the total load"),
        (["-m", "digits", "--workers", "2", "--concurrency", "2", "--rate", "5"], "either"),
        (["-m", "digits", "--workers", "0", "--concurrency", "2"], "--workers must be"),
        (["--workers", "2", "--concurrency", "2"], "needs the model's name"),
        (["-m", "d", "--workers", "2", "--concurrency", "2", "--name", "Big_Name"], "DNS label"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--duration", "0"], "--duration"),
        (["-m", "d", "--workers", "2", "--rate", "x"], "rate spec 'x'"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--cpu", "lots"], "--cpu 'lots'"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--api-key-secret", "k"], "SECRET:KEY"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--bench-arg", "--slo p99=5ms"], "--slo"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--bench-arg", "-o x.json"], "-o is set"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--bench-arg=--bogus"], "--bogus"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--bench-arg", "--workers x"], "invalid"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--bench-arg", "-H 'x"], "quotation"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--protocol", "v2-grpc"], "grpc://"),
        (["-m", "d", "--workers", "2", "--rate", "5", "--start-at", "soon"], "ISO 8601"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code = main(["deploy", "bench-job", "--target", TARGET, "--out", str(out), *options])
    assert code == USAGE
    err = capsys.readouterr().err
    assert err.startswith("mserve deploy bench-job: error: ")
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize("target", ["http://localhost:8000", "http://127.0.0.1:8000", "ftp://x"])
def test_targets_a_pod_cannot_mean_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    options = ["--target", target, "-m", "d", "--workers", "2", "--concurrency", "2"]
    assert main(["deploy", "bench-job", "--out", str(tmp_path / "o"), *options]) == USAGE
    assert "--target" in capsys.readouterr().err


def test_a_grpc_target() -> None:
    job = BenchJob(
        target="grpc://mserve:8001", model="digits", workers=2, concurrency="4", protocol="v2-grpc"
    )
    validate(job_manifest(job))
    assert BenchJob(target="mserve:8001", model="d", workers=1, rate="5", protocol="v2-grpc")


def test_start_at_reaches_every_pod_and_stretches_the_deadline(tmp_path: Path) -> None:
    import time

    start = int(time.time()) + 600
    options = ["-m", "digits", "--workers", "2", "--concurrency", "4"]
    assert deploy(tmp_path / "a", *options) == OK
    assert deploy(tmp_path / "b", *options, "--start-at", str(start)) == OK
    plain, waiting = written(tmp_path / "a"), written(tmp_path / "b")
    args = waiting["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--start-at") + 1] == str(start)
    extra = waiting["spec"]["activeDeadlineSeconds"] - plain["spec"]["activeDeadlineSeconds"]
    assert 590 <= extra <= 600  # the pods may wait that long before they measure
