"""``mserve deploy docker`` end to end: the build context is built into a real image by a real
Docker engine (its own dockerd, a debootstrap base, every wheel from the host: no network in
the build), the container runs read-only as a non-root user with the host's network, and
tritonclient (HTTP and gRPC) gets the digits model's right answers from it."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from docker_engine import Engine, EngineUnavailable, base_image, docker_engine

from mserve.repository import write_model
from mserve.server.process import free_port

TAG = "mserve-digits-test:ci"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The tests' own engine, with the base image; in CI a missing engine fails the tests."""
    try:
        with docker_engine() as started:
            base_image(started)
            yield started
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no Docker engine for the image tests: {exc}")
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory, digits_model: Any) -> Path:
    """A repository holding the digits model, written as a build context with a wheelhouse."""
    repo = tmp_path_factory.mktemp("repo")
    write_model(repo, digits_model.config, 1, digits_model.onnx)
    return repo


@pytest.fixture(scope="module")
def image(engine: Engine, context: Path, mserve_cli: Any) -> Iterator[tuple[Engine, Path]]:
    """The image built by ``mserve deploy docker --build`` against the tests' engine; removed
    afterwards with its dangling layers (the cached data root keeps only the base)."""
    out = context.parent / "build"
    done = mserve_cli(
        "deploy", "docker", str(context), "--out", str(out), "--wheelhouse",
        "--base-image", base_image(engine), "--image", TAG, "--name", "digits", "--build",
        "--json",
        timeout=900, env={"DOCKER_HOST": engine.host, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads(done.stdout)
    assert doc["built"] is True
    assert doc["image"] == TAG
    assert "Successfully tagged " + TAG in done.stderr
    yield engine, out
    engine.docker("rmi", "-f", TAG, check=False)
    engine.docker("image", "prune", "-f", check=False)


def test_image_metadata(image: tuple[Engine, Path]) -> None:
    engine, _ = image
    info = json.loads(engine.docker("image", "inspect", TAG).stdout)[0]["Config"]
    assert info["User"] == "10001:10001"
    assert set(info["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    assert info["Entrypoint"] == ["mserve"]
    assert info["Cmd"][:2] == ["serve", "/models"]
    assert "/v2/health/ready" in " ".join(info["Healthcheck"]["Test"])
    assert info["Labels"]["org.opencontainers.image.title"] == "digits"


@contextlib.contextmanager
def _container(engine: Engine, *run_args: str) -> Iterator[str]:
    """A detached container; removed (forcibly) at the end."""
    cid = engine.docker("run", "-d", *run_args).stdout.strip()
    try:
        yield cid
    finally:
        engine.docker("rm", "-f", cid, check=False)


def _wait_healthy(engine: Engine, cid: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        state = json.loads(engine.docker("inspect", cid).stdout)[0]["State"]
        status = state.get("Health", {}).get("Status", "")
        if status == "healthy":
            return
        if not state["Running"]:
            break
        time.sleep(0.5)
    logs = engine.docker("logs", cid, check=False)
    raise AssertionError(f"container not healthy ({status}): {logs.stdout}{logs.stderr}")


def test_container_serves_tritonclient_read_only_non_root(
    image: tuple[Engine, Path], digits_model: Any
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    engine, _ = image
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    health = f"http://127.0.0.1:{http_port}/v2/health/ready"
    args = ["serve", "/models", "--host", "127.0.0.1", "--port", str(http_port)]
    args += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    args += ["--drain-timeout", "5"]
    with _container(
        engine, "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "--health-interval", "1s", "-e", f"MSERVE_HEALTH_URL={health}", TAG, *args,
    ) as cid:  # fmt: skip
        _wait_healthy(engine, cid)  # the image's own HEALTHCHECK said so
        assert engine.docker("exec", cid, "id", "-u").stdout.strip() == "10001"
        write = engine.docker("exec", cid, "touch", "/models/x", check=False)
        assert write.returncode != 0
        assert "Read-only file system" in write.stderr

        x = digits_model.x_test[:40]
        expected = digits_model.estimator.predict(x)
        http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = http.infer("digits", [inp], outputs=[httpclient.InferRequestedOutput("label")])
        np.testing.assert_array_equal(out.as_numpy("label"), expected)

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert grpc.is_model_ready("digits")
        ginp = grpcclient.InferInput("input", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        gout = grpc.infer("digits", [ginp])
        np.testing.assert_array_equal(gout.as_numpy("label"), expected)
        grpc.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as scrape:
            text = scrape.read().decode()
        assert 'mserve_requests_total{model="digits",version="1",protocol="grpc"' in text

        # docker stop sends SIGTERM: the server drains and exits 0
        engine.docker("stop", "--time", "20", cid, timeout=60)
        state = json.loads(engine.docker("inspect", cid).stdout)[0]["State"]
        assert state["ExitCode"] == 0
        logs = engine.docker("logs", cid).stderr
        assert "drained:" in logs
        assert "0 unanswered" in logs


def test_models_mounted_at_run_time(
    image: tuple[Engine, Path], tmp_path: Path, onnx_factory: Any
) -> None:
    """The same image serves a repository mounted read-only over /models instead."""
    from mserve.config import ModelConfig
    from mserve.protocol import TensorSpec

    engine, _ = image
    repo = tmp_path / "mounted"
    config = ModelConfig(
        name="plus5",
        inputs=(TensorSpec("INPUT", "FP32", (-1, 3)),),
        outputs=(TensorSpec("OUTPUT", "FP32", (-1, 3)),),
        max_batch_size=4,
    )
    write_model(repo, config, 1, onnx_factory.add_const(5.0, (-1, 3)))
    os.chmod(repo, 0o755)
    port = free_port()
    with _container(
        engine, "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{repo}:/models:ro", TAG, "serve", "/models", "--host", "127.0.0.1",
        "--port", str(port),
    ) as cid:  # fmt: skip
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    break
            assert time.monotonic() < deadline, engine.docker("logs", cid).stderr
            time.sleep(0.3)
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        inp = httpclient.InferInput("INPUT", [2, 3], "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("plus5", [inp])
        np.testing.assert_allclose(out.as_numpy("OUTPUT"), x + 5)
        index = client.get_model_repository_index()
        assert [(m["name"], m["state"]) for m in index] == [("plus5", "READY")]
