"""One launcher per serving system ``mserve compare`` knows, each configuring its system the
way that system's documentation does, with ONNX Runtime inside.

A launcher writes what its system needs into the work folder (mserve's repository, MLServer's
``model-settings.json``, TorchServe's ``config.properties``, ...) and says how to start it. The
program a system runs lives in ``apps/``; it learns the model, the ports and the batching from
the settings file of ``workfiles.py``. Nothing here starts a process or installs a package;
docs/compare-systems.md describes each system and its quirks.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from mserve.compare.systems import Launch, ModelUnderTest, System, env_python, envs_root
from mserve.compare.workfiles import (
    APPS,
    MAX_DELAY_US,
    free_port,
    program_settings,
    tensor_dict,
    write_body,
    write_settings,
)
from mserve.config import DynamicBatching, ModelConfig, RuntimeOptions
from mserve.errors import ConfigError
from mserve.protocol import TensorSpec
from mserve.repository import write_model

#: marks a finished environment (scripts/compare-envs writes it last)
ENV_MARKER = ".mserve-compare-complete"
HOST = "127.0.0.1"


def v2_bench(model: ModelUnderTest) -> list[str]:
    """``mserve bench`` options for a V2 JSON server."""
    return ["--protocol", "v2-json", "-m", model.name]


def http_bench(body: Path) -> list[str]:
    """``mserve bench`` options for a plain-JSON server, ``body`` the request."""
    return [
        *("--protocol", "http", "--body", str(body)),
        *("--content-type", "application/json", "--expect-status", "200"),
    ]


def batching_words(model: ModelUnderTest, batching: bool, knobs: str) -> str:
    """How a system batches, for the report ("" when it does not)."""
    return f"up to {model.max_batch_size} rows, {knobs}" if batching else ""


def installed_version(dist: str, python: Path | None) -> str | None:
    """The version of ``dist`` in the environment of ``python`` (None: this interpreter's)."""
    if python is None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    site = [str(p) for p in (python.parent.parent / "lib").glob("python3*/site-packages")]
    for found in metadata.distributions(path=site):
        if found.metadata["Name"].lower().replace("_", "-") == dist:
            return found.version
    return None


class VenvSystem:
    """A system run from its own virtual environment, made by ``scripts/compare-envs``."""

    name = ""
    label = ""  # the title, "{}" where the installed version goes
    dist = ""  # the distribution whose version the title carries

    @property
    def title(self) -> str:
        """The name in the report, with the installed version when there is one."""
        version = installed_version(self.dist, self.python())
        return self.label.format(f" {version}" if version else "")

    def python(self) -> Path | None:
        """The interpreter the system runs with (None: mserve's own)."""
        return env_python(self.name)

    def interpreter(self) -> str:
        """The interpreter the system runs with, as a command."""
        python = self.python()
        return str(python) if python else sys.executable

    def executable(self, script: str) -> str:
        """A console script of the environment (``mlserver``, ``bentoml``, ...)."""
        return str(env_python(self.name).parent / script)

    def missing(self) -> str | None:
        """None when the environment is complete; else where it is lacking and how to make it."""
        env = envs_root() / self.name
        if not (env / ENV_MARKER).exists():
            return f"no environment at {env}: run scripts/compare-envs {self.name}"
        return None


class MserveSystem:
    """mserve itself, from this interpreter: a repository with config.yaml."""

    name = "mserve"

    @property
    def title(self) -> str:
        """'mserve VERSION'."""
        from mserve import __version__

        return f"mserve {__version__}"

    def missing(self) -> str | None:
        """Always None: mserve runs wherever this runs."""
        return None

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``mserve serve REPO``, the repository written into ``workdir``; a
        ``dynamic_batching`` section when batching."""
        program_settings(model, port, workdir, batching)  # the checks every system makes
        config = ModelConfig(
            name=model.name,
            inputs=tuple(TensorSpec(t.name, t.datatype, t.shape) for t in model.inputs),
            outputs=tuple(TensorSpec(t.name, t.datatype, t.shape) for t in model.outputs),
            max_batch_size=model.max_batch_size,
            dynamic_batching=DynamicBatching(max_queue_delay_us=MAX_DELAY_US) if batching else None,
            runtime=RuntimeOptions(intra_op_threads=model.threads),
        )
        repository = workdir / "repository"
        write_model(repository, config, 1, model.onnx_path.read_bytes())
        knobs = f"dynamic_batching.max_queue_delay_microseconds {MAX_DELAY_US}"
        return Launch(
            argv=[
                *(sys.executable, "-m", "mserve", "serve", str(repository)),
                *("--host", HOST, "--port", str(port)),
            ],
            ready_url=f"http://{HOST}:{port}/v2/models/{model.name}/ready",
            target=f"http://{HOST}:{port}",
            bench_args=v2_bench(model),
            cwd=workdir,
            batching=batching_words(model, batching, knobs),
        )


class TritonSystem(VenvSystem):
    """NVIDIA Triton through PyTriton: apps/triton_app.py, V2 JSON."""

    name = "triton"
    label = "NVIDIA Triton (PyTriton{})"
    dist = "nvidia-pytriton"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """The app binds the model to Triton and serves; Triton's dynamic batcher when
        batching. gRPC and metrics on free ports."""
        ports = {"grpc_port": free_port(), "metrics_port": free_port()}
        settings = program_settings(model, port, workdir, batching, **ports)
        knobs = f"DynamicBatcher(max_queue_delay_microseconds={MAX_DELAY_US})"
        return Launch(
            argv=[self.interpreter(), str(APPS / "triton_app.py")],
            ready_url=f"http://{HOST}:{port}/v2/models/{model.name}/ready",
            target=f"http://{HOST}:{port}",
            bench_args=v2_bench(model),
            env=write_settings(workdir, settings),
            cwd=workdir,
            batching=batching_words(model, batching, knobs),
        )


class MlserverSystem(VenvSystem):
    """Seldon MLServer with a custom runtime: apps/mlserver_app.py, V2 JSON."""

    name = "mlserver"
    label = "Seldon MLServer{}"
    dist = "mlserver"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``mlserver start FOLDER``, with ``settings.json`` there and the model's
        ``model-settings.json`` in FOLDER/NAME; adaptive batching (``max_batch_size``,
        ``max_batch_time``) when batching."""
        ports = {"grpc_port": free_port(), "metrics_port": free_port()}
        env = write_settings(workdir, program_settings(model, port, workdir, batching, **ports))
        folder = workdir / "mlserver"
        (folder / model.name).mkdir(parents=True, exist_ok=True)
        # its .metrics and .envs folders go into the working folder: FOLDER
        server = {"host": HOST, "http_port": port, **ports, "debug": False}
        model_settings: dict[str, Any] = {
            "name": model.name,
            "implementation": "mlserver_app.OnnxModel",
            "platform": "onnxruntime",
            "inputs": [tensor_dict(t) for t in model.inputs],
            "outputs": [tensor_dict(t) for t in model.outputs],
            "parameters": {"uri": str(model.onnx_path.resolve())},
        }
        if batching:
            model_settings |= {
                "max_batch_size": model.max_batch_size,
                "max_batch_time": MAX_DELAY_US / 1e6,
            }
        (folder / "settings.json").write_text(json.dumps(server, indent=2), encoding="utf-8")
        (folder / model.name / "model-settings.json").write_text(
            json.dumps(model_settings, indent=2), encoding="utf-8"
        )
        return Launch(
            argv=[self.executable("mlserver"), "start", str(folder)],
            ready_url=f"http://{HOST}:{port}/v2/models/{model.name}/ready",
            target=f"http://{HOST}:{port}",
            bench_args=v2_bench(model),
            env=env,
            cwd=folder,
            batching=batching_words(model, batching, f"max_batch_time {MAX_DELAY_US / 1e6:g} s"),
        )


class KserveSystem(VenvSystem):
    """KServe's Python model server: apps/kserve_app.py, V2 JSON."""

    name = "kserve"
    label = "KServe model server{}"
    dist = "kserve"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """The app starts ``ModelServer(workers=1)``; it has no batching of its own."""
        settings = program_settings(model, port, workdir, False, grpc_port=free_port())
        return Launch(
            argv=[self.interpreter(), str(APPS / "kserve_app.py")],
            ready_url=f"http://{HOST}:{port}/v2/models/{model.name}/ready",
            target=f"http://{HOST}:{port}",
            bench_args=v2_bench(model),
            env=write_settings(workdir, settings),
            cwd=workdir,
        )


class BentomlSystem(VenvSystem):
    """BentoML: apps/bentoml_app.py, plain JSON at /predict."""

    name = "bentoml"
    label = "BentoML{}"
    dist = "bentoml"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``bentoml serve bentoml_app:Classifier``; ``batchable=True`` when batching."""
        env = write_settings(workdir, program_settings(model, port, workdir, batching))
        env |= {"BENTOML_HOME": str(workdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        return Launch(
            argv=[
                *(self.executable("bentoml"), "serve", "bentoml_app:Classifier"),
                *("--working-dir", str(APPS), "--host", HOST, "--port", str(port)),
            ],
            ready_url=f"http://{HOST}:{port}/readyz",
            target=f"http://{HOST}:{port}/predict",
            bench_args=http_bench(write_body(model, workdir)),
            env=env,
            cwd=workdir,
            batching=batching_words(model, batching, "batchable=True, adaptive wait"),
        )


class LitserveSystem(VenvSystem):
    """LitServe: apps/litserve_app.py, plain JSON at /predict."""

    name = "litserve"
    label = "LitServe{}"
    dist = "litserve"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """The app runs ``LitServer``; ``max_batch_size`` and ``batch_timeout`` when batching."""
        settings = program_settings(model, port, workdir, batching)
        return Launch(
            argv=[self.interpreter(), str(APPS / "litserve_app.py")],
            ready_url=f"http://{HOST}:{port}/health",
            target=f"http://{HOST}:{port}/predict",
            bench_args=http_bench(write_body(model, workdir)),
            env=write_settings(workdir, settings),
            cwd=workdir,
            batching=batching_words(model, batching, f"batch_timeout {MAX_DELAY_US / 1e6:g} s"),
        )


class RayserveSystem(VenvSystem):
    """Ray Serve: apps/rayserve_app.py, plain JSON at /predict."""

    name = "rayserve"
    label = "Ray Serve{}"
    dist = "ray"

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """The app starts Ray and Serve and deploys; ``@serve.batch`` when batching."""
        env = write_settings(workdir, program_settings(model, port, workdir, batching))
        env |= {"RAY_USAGE_STATS_ENABLED": "0"}
        knobs = f"@serve.batch(batch_wait_timeout_s={MAX_DELAY_US / 1e6:g})"
        return Launch(
            argv=[self.interpreter(), str(APPS / "rayserve_app.py")],
            ready_url=f"http://{HOST}:{port}/health",
            target=f"http://{HOST}:{port}/predict",
            bench_args=http_bench(write_body(model, workdir)),
            env=env,
            cwd=workdir,
            batching=batching_words(model, batching, knobs),
        )


class TorchserveSystem(VenvSystem):
    """TorchServe with a custom ONNX Runtime handler: apps/torchserve_app.py, plain JSON at
    /predictions/NAME."""

    name = "torchserve"
    label = "TorchServe{}"
    dist = "torchserve"

    def missing(self) -> str | None:
        """Also needs Java on PATH."""
        lacking = super().missing()
        if lacking is None and shutil.which("java") is None:
            return "TorchServe needs Java 11 or later: no 'java' on PATH"
        return lacking

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``config.properties`` and the archive's ``model-config.yaml`` into ``workdir``; the
        app archives the model and runs ``torchserve``. ``batchSize`` and ``maxBatchDelay``
        when batching."""
        env = write_settings(workdir, program_settings(model, port, workdir, batching))
        (workdir / "tmp").mkdir(exist_ok=True)
        env |= {"TMPDIR": str(workdir / "tmp")}  # where torchserve keeps its pid file
        properties = {
            "inference_address": f"http://{HOST}:{port}",
            "management_address": f"http://{HOST}:{free_port()}",
            "metrics_address": f"http://{HOST}:{free_port()}",
            "grpc_inference_address": HOST,
            "grpc_inference_port": free_port(),
            "grpc_management_address": HOST,
            "grpc_management_port": free_port(),
            "default_workers_per_model": 1,
        }
        config = {"minWorkers": 1, "maxWorkers": 1}
        delay_ms = max(1, MAX_DELAY_US // 1000)
        if batching:
            config |= {"batchSize": model.max_batch_size, "maxBatchDelay": delay_ms}
        for name, values, sep in (
            ("config.properties", properties, "="),
            ("model-config.yaml", config, ": "),
        ):
            text = "".join(f"{k}{sep}{v}\n" for k, v in values.items())
            (workdir / name).write_text(text, encoding="utf-8")
        return Launch(
            argv=[self.interpreter(), str(APPS / "torchserve_app.py")],
            ready_url=f"http://{HOST}:{port}/ping",
            target=f"http://{HOST}:{port}/predictions/{model.name}",
            bench_args=http_bench(write_body(model, workdir)),
            env=env,
            cwd=workdir,
            batching=batching_words(model, batching, f"maxBatchDelay {delay_ms} ms"),
        )


class BaselineSystem(VenvSystem):
    """A hand-written baseline: from its environment, else from this interpreter when the
    packages it needs import here (CI installs them with mserve's test extras). It has no
    batching of its own; asked to batch, it runs every request alone."""

    modules: tuple[str, ...] = ()

    def python(self) -> Path | None:
        """The environment's interpreter, else None (this one) when the packages import here."""
        if VenvSystem.missing(self) is None or not self._here():
            return env_python(self.name)
        return None

    def missing(self) -> str | None:
        """None when the environment is complete or the packages import here."""
        lacking = VenvSystem.missing(self)
        if lacking is None or self._here():
            return None
        return f"{lacking} (or install {' and '.join(self.modules)} beside mserve)"

    def _here(self) -> bool:
        return all(find_spec(m) is not None for m in self.modules)

    def _v2_launch(
        self, model: ModelUnderTest, port: int, workdir: Path, server_args: list[str]
    ) -> Launch:
        """The launch of a baseline program speaking V2 JSON: this interpreter running
        ``server_args``, with the program's settings written into ``workdir``."""
        env = write_settings(workdir, program_settings(model, port, workdir, False))
        return Launch(
            argv=[self.interpreter(), *server_args],
            ready_url=f"http://{HOST}:{port}/v2/health/ready",
            target=f"http://{HOST}:{port}",
            bench_args=v2_bench(model),
            env=env,
            cwd=workdir,
        )


class FastapiSystem(BaselineSystem):
    """FastAPI + uvicorn (one worker): apps/fastapi_app.py, V2 JSON."""

    name = "fastapi"
    label = "FastAPI{} + uvicorn"
    dist = "fastapi"
    modules = ("fastapi", "uvicorn")

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``uvicorn fastapi_app:app --workers 1``."""
        return self._v2_launch(
            model,
            port,
            workdir,
            [
                *("-m", "uvicorn", "fastapi_app:app", "--app-dir", str(APPS)),
                *("--host", HOST, "--port", str(port), "--workers", "1"),
                *("--log-level", "warning", "--no-access-log"),
            ],
        )


class FlaskSystem(BaselineSystem):
    """Flask + gunicorn (one gthread worker): apps/flask_app.py, V2 JSON."""

    name = "flask"
    label = "Flask{} + gunicorn"
    dist = "flask"
    modules = ("flask", "gunicorn")
    threads = 4

    def launch(self, model: ModelUnderTest, port: int, workdir: Path, batching: bool) -> Launch:
        """``gunicorn --workers 1 --threads 4 flask_app:app``."""
        return self._v2_launch(
            model,
            port,
            workdir,
            [
                *("-m", "gunicorn", "--chdir", str(APPS)),
                *("--bind", f"{HOST}:{port}", "--workers", "1", "--threads", str(self.threads)),
                *("--log-level", "warning", "flask_app:app"),
            ],
        )


#: every system, by its command-line name, in the report's order
ALL: dict[str, System] = {
    s.name: s
    for s in (
        MserveSystem(),
        TritonSystem(),
        MlserverSystem(),
        KserveSystem(),
        BentomlSystem(),
        LitserveSystem(),
        RayserveSystem(),
        TorchserveSystem(),
        FastapiSystem(),
        FlaskSystem(),
    )
}


def get(name: str) -> System:
    """The system called ``name`` on the command line; ConfigError for an unknown name."""
    try:
        return ALL[name]
    except KeyError:
        raise ConfigError("--systems", "systems", f"one of {', '.join(ALL)}", name) from None
