"""The launchers: what mserve's and the hand-written baselines' write and the commands, URLs and
bench options they give (these run in CI); the plain-JSON options of a system without V2; and
each system's install hint while its environment is missing. Nothing is started here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mserve.compare import launchers
from mserve.compare.launchers import ENV_MARKER
from mserve.compare.systems import ModelUnderTest, TensorInfo
from mserve.compare.workfiles import APPS, SETTINGS_ENV
from mserve.config import load_model_config
from mserve.errors import ConfigError

V2_BENCH = ["--protocol", "v2-json", "-m", "adder"]
IN_ENVS = ["triton", "mlserver", "kserve", "bentoml", "litserve", "rayserve", "torchserve"]


@pytest.fixture
def envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder of environments, as $MSERVE_COMPARE_ENVS."""
    root = tmp_path / "envs"
    root.mkdir()
    monkeypatch.setenv("MSERVE_COMPARE_ENVS", str(root))
    return root


@pytest.fixture
def adder(tmp_path: Path, onnx_factory) -> ModelUnderTest:
    """OUTPUT = INPUT + 1 on rows of 3, batches of up to 8, two threads."""
    path = tmp_path / "adder.onnx"
    path.write_bytes(onnx_factory.add_const(1.0, (-1, 3)))
    return ModelUnderTest(
        "adder",
        path,
        (TensorInfo("INPUT", "FP32", (-1, 3)),),
        (TensorInfo("OUTPUT", "FP32", (-1, 3)),),
        max_batch_size=8,
        threads=2,
    )


def _make_env(envs: Path, name: str) -> Path:
    python = envs / name / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    (envs / name / ENV_MARKER).touch()
    return python


def test_every_system_is_known_by_its_command_line_name() -> None:
    assert list(launchers.ALL) == ["mserve", *IN_ENVS, "fastapi", "flask"]
    assert all(launchers.get(name).name == name for name in launchers.ALL)
    with pytest.raises(ConfigError, match="one of mserve, triton"):
        launchers.get("tfserving")


@pytest.mark.parametrize("batching", [False, True])
def test_mserve_serves_the_repository_it_writes(
    tmp_path: Path, adder: ModelUnderTest, batching: bool
) -> None:
    mserve = launchers.get("mserve")
    assert mserve.missing() is None
    assert mserve.title.startswith("mserve ")
    launch = mserve.launch(adder, 8123, tmp_path / "work", batching)
    repository = tmp_path / "work" / "repository"
    assert launch.argv == [
        *(sys.executable, "-m", "mserve", "serve", str(repository)),
        *("--host", "127.0.0.1", "--port", "8123"),
    ]
    config = load_model_config(repository / "adder" / "config.yaml", "adder")
    assert (repository / "adder" / "1" / "model.onnx").read_bytes() == adder.onnx_path.read_bytes()
    assert (config.max_batch_size, config.runtime.intra_op_threads) == (8, 2)
    assert config.inputs[0].shape == (-1, 3)
    assert (config.dynamic_batching is not None) == batching == bool(launch.batching)
    if config.dynamic_batching is not None:
        assert 0 < config.dynamic_batching.max_queue_delay_us <= 10_000
    assert launch.ready_url == "http://127.0.0.1:8123/v2/models/adder/ready"
    assert launch.target == "http://127.0.0.1:8123"
    assert launch.bench_args == V2_BENCH


def test_mserve_cannot_batch_a_model_without_a_batch_axis(
    tmp_path: Path, adder: ModelUnderTest
) -> None:
    unbatched = ModelUnderTest("adder", adder.onnx_path, adder.inputs, adder.outputs, 0)
    with pytest.raises(ConfigError, match="max_batch_size"):
        launchers.get("mserve").launch(unbatched, 8123, tmp_path, batching=True)


@pytest.mark.parametrize(("name", "program"), [("fastapi", "uvicorn"), ("flask", "gunicorn")])
def test_a_baseline_serves_v2_json_from_its_environment(
    envs: Path, tmp_path: Path, adder: ModelUnderTest, name: str, program: str
) -> None:
    python = _make_env(envs, name)
    system = launchers.get(name)
    assert system.missing() is None
    launch = system.launch(adder, 8124, tmp_path / "work", batching=True)
    assert launch.argv[:3] == [str(python), "-m", program]
    assert f"{name}_app:app" in launch.argv
    assert (APPS / f"{name}_app.py").is_file()
    assert "--workers" in launch.argv
    assert launch.argv[launch.argv.index("--workers") + 1] == "1"
    assert launch.ready_url == "http://127.0.0.1:8124/v2/health/ready"
    assert launch.target == "http://127.0.0.1:8124"
    assert launch.bench_args == V2_BENCH
    assert launch.batching == ""  # no batching of its own: every request runs alone
    assert launch.env["PYTHONPATH"] == str(APPS)
    settings = json.loads(Path(launch.env[SETTINGS_ENV]).read_text())
    assert (settings["name"], settings["port"], settings["threads"]) == ("adder", 8124, 2)
    assert settings["batching"] is False
    assert Path(settings["onnx_path"]) == adder.onnx_path.resolve()


def test_a_baseline_without_environment_runs_here_when_its_packages_import(
    envs: Path, tmp_path: Path, adder: ModelUnderTest
) -> None:
    fastapi = launchers.get("fastapi")  # FastAPI and uvicorn are test dependencies
    assert fastapi.missing() is None
    assert fastapi.launch(adder, 8125, tmp_path, batching=False).argv[0] == sys.executable


def test_a_plain_json_system_is_benched_with_the_body_it_writes(
    envs: Path, tmp_path: Path, adder: ModelUnderTest
) -> None:
    launch = launchers.get("bentoml").launch(adder, 8126, tmp_path / "work", batching=True)
    body = tmp_path / "work" / "body.json"
    assert launch.bench_args == [
        *("--protocol", "http", "--body", str(body.resolve())),
        *("--content-type", "application/json", "--expect-status", "200"),
    ]
    instances = json.loads(body.read_text())["instances"]
    assert [len(instance) for instance in instances] == [3]
    assert launch.target == "http://127.0.0.1:8126/predict"
    assert launch.ready_url == "http://127.0.0.1:8126/readyz"
    assert "8" in launch.batching


@pytest.mark.parametrize("name", IN_ENVS)
def test_a_system_without_its_environment_names_the_setup_command(envs: Path, name: str) -> None:
    hint = launchers.get(name).missing()
    assert hint is not None
    assert str(envs / name) in hint
    assert f"scripts/compare-envs {name}" in hint


def test_an_environment_is_missing_until_the_setup_script_marked_it_complete(
    envs: Path,
) -> None:
    triton = launchers.get("triton")
    (envs / "triton" / "bin").mkdir(parents=True)  # made, but its packages not all installed
    assert triton.missing() is not None
    (envs / "triton" / ENV_MARKER).touch()
    assert triton.missing() is None


def test_a_title_carries_the_version_installed_in_the_environment(envs: Path) -> None:
    triton = launchers.get("triton")
    assert triton.title == "NVIDIA Triton (PyTriton)"
    site = envs / "triton" / "lib" / "python3.11" / "site-packages"
    dist = site / "nvidia_pytriton-0.7.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-pytriton\nVersion: 0.7.0\n")
    assert triton.title == "NVIDIA Triton (PyTriton 0.7.0)"
