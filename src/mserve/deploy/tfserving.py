"""A TensorFlow Serving layout (``mserve deploy tfserving``): TF Serving's own server, for
TensorFlow models, beside mserve rather than through it.

Each model lands as ``models/NAME/VERSION/`` (saved_model.pb, variables/), the model base
path TF Serving polls; a SavedModel directory is copied, a Keras ``.keras`` / ``.h5`` file is
loaded and exported as a SavedModel with Keras' export API (TensorFlow is imported only then).
``models.config`` (a text-format ModelServerConfig) lists the models and ``monitoring.config``
turns on TF Serving's Prometheus endpoint. The texts are pure functions; :func:`write_tfserving`
is the one that writes."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mserve import __version__
from mserve.deploy.files import write_texts

__all__ = [
    "MONITORING_PATH",
    "TFServingModel",
    "model_kind",
    "models_config",
    "monitoring_config",
    "parse_model_arg",
    "write_tfserving",
]

MODELS_CONFIG_FILE = "models.config"
MONITORING_CONFIG_FILE = "monitoring.config"
README_FILE = "README.md"
MONITORING_PATH = "/monitoring/prometheus/metrics"
GRPC_PORT = 8500
REST_PORT = 8501
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
EXPECTED = "a SavedModel directory (with saved_model.pb) or a Keras .keras / .h5 file"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_OTHER_FORMATS = {
    ".onnx": "an ONNX model",
    ".pt": "a PyTorch file",
    ".pth": "a PyTorch file",
    ".pkl": "a pickle",
    ".joblib": "a pickle",
    ".tflite": "a TensorFlow Lite model",
}


@dataclass(frozen=True)
class TFServingModel:
    """One model for TF Serving: its ``name`` (the URL's /v1/models/NAME) and ``source``, a
    SavedModel directory or a Keras file."""

    name: str
    source: Path

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"model name {self.name!r} is not usable in TF Serving's URLs: expected letters, "
                "digits, '_', '.' and '-', starting with a letter or digit"
            )


def model_kind(path: Path) -> str:
    """``"saved_model"`` or ``"keras"`` for what TF Serving can serve; ValueError saying what
    is expected otherwise (and pointing ONNX and other models to ``mserve serve``)."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        raise ValueError(f"{path}: the directory holds no saved_model.pb; expected {EXPECTED}")
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory; expected {EXPECTED}")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras"
    what = _OTHER_FORMATS.get(suffix, "not a TensorFlow model")
    raise ValueError(
        f"{path}: {what}. TF Serving serves TensorFlow models only: expected {EXPECTED}. "
        "Serve other models with 'mserve serve' (convert them with 'mserve convert'), and "
        "deploy them with 'mserve deploy docker' or 'mserve deploy kubernetes'"
    )


def default_model_name(path: Path) -> str:
    """A model's name from its path: a file's stem, a directory's name, or for a version
    folder (``my_model/1``) its parent's name."""
    path = path.resolve()
    if path.is_dir():
        return path.parent.name if path.name.isdigit() else path.name
    return path.stem


def parse_model_arg(text: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` -> (NAME, PATH); a plain PATH (or one that exists with '=' in it) ->
    (None, PATH)."""
    name, eq, rest = text.partition("=")
    if eq and _NAME.fullmatch(name) and not Path(text).exists():
        return name, Path(rest)
    return None, Path(text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def models_config(names: Sequence[str]) -> str:
    """TF Serving's ``--model_config_file``: a text-format ModelServerConfig listing each model
    at base path /models/NAME, platform tensorflow, serving its latest version."""
    lines = [
        f"# TF Serving models, written by 'mserve deploy tfserving' (mserve {__version__}).",
        "model_config_list {",
    ]
    for name in names:
        lines += [
            "  config {",
            f"    name: {_quoted(name)}",
            f"    base_path: {_quoted('/models/' + name)}",
            '    model_platform: "tensorflow"',
            "    model_version_policy {",
            "      latest {",
            "        num_versions: 1",
            "      }",
            "    }",
            "  }",
        ]
    return "\n".join([*lines, "}", ""])


def monitoring_config() -> str:
    """TF Serving's ``--monitoring_config_file``: Prometheus metrics on the REST port."""
    return (
        "# TF Serving's Prometheus endpoint, on the REST port.\n"
        "prometheus_config {\n"
        "  enable: true\n"
        f"  path: {_quoted(MONITORING_PATH)}\n"
        "}\n"
    )


def readme(names: Sequence[str], version: int, exported_with: str | None) -> str:
    """README.md: run TF Serving's container over the folder, call it, bench it."""
    first = names[0] if names else "NAME"
    tf_note = (
        f" (the Keras files were exported with TensorFlow {exported_with})" if exported_with else ""
    )
    return "\n".join(
        [
            "# TensorFlow Serving",
            "",
            f"Written by `mserve deploy tfserving` (mserve {__version__}): "
            + ", ".join(f"`{n}`" for n in names)
            + f", version {version}, under `models/NAME/{version}/`. From this folder:",
            "",
            "```bash",
            f"docker run --rm -p {GRPC_PORT}:{GRPC_PORT} -p {REST_PORT}:{REST_PORT} \\",
            '    -v "$PWD/models:/models:ro" -v "$PWD:/config:ro" \\',
            "    tensorflow/serving \\",
            f"    --model_config_file=/config/{MODELS_CONFIG_FILE} \\",
            f"    --monitoring_config_file=/config/{MONITORING_CONFIG_FILE}",
            "```",
            "",
            f"gRPC is on {GRPC_PORT}, REST on {REST_PORT}. Use a `tensorflow/serving` at least as "
            f"new as the TensorFlow that wrote the models{tf_note}.",
            "",
            "```bash",
            f"curl -s localhost:{REST_PORT}/v1/models/{first}            # status",
            f"curl -s localhost:{REST_PORT}/v1/models/{first}/metadata   # the signature",
            f"curl -s localhost:{REST_PORT}{MONITORING_PATH}",
            f"mserve bench http://127.0.0.1:{REST_PORT} --protocol tfserving -m {first} "
            "--concurrency 1,4,16",
            "```",
            "",
            f"A new version is a new folder `models/NAME/{version + 1}/`: TF Serving finds it "
            "and switches to it (`models.config` serves the latest version of each model). "
            "`mserve serve` answers the same REST API, so the same bench line compares the two "
            "servers (docs/tfserving.md).",
            "",
        ]
    )


def _export_keras(source: Path, target: Path) -> str:
    """Load a Keras file (refusing code-running Lambda layers) and export its inference
    function as a SavedModel at ``target``; returns TensorFlow's version."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:
        raise ValueError(
            f"{source}: exporting a Keras file needs TensorFlow ({exc.name or exc} cannot be "
            "imported): pip install 'mserve[tensorflow]'"
        ) from exc
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{source}: Keras runs on '{keras.backend.backend()}'; set KERAS_BACKEND=tensorflow"
        )
    try:
        model = keras.models.load_model(source, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc):
            raise ValueError(
                f"{source}: the model has Lambda layers, which run code when loaded; export it "
                "yourself with model.export(DIR) and pass DIR"
            ) from exc
        raise ValueError(f"{source}: cannot load the Keras model: {exc}") from exc
    except Exception as exc:  # h5py, zipfile and Keras raise many types for bad files
        raise ValueError(f"{source}: cannot load the Keras model: {exc}") from exc
    model.export(str(target), format="tf_saved_model", verbose=False)
    return str(tf.__version__)


def _place(model: TFServingModel, base: Path, version: int) -> tuple[Path, str | None]:
    """Put one model at base/NAME/VERSION, built beside it under a name TF Serving ignores and
    then renamed, so that a polling server never sees half a version."""
    folder = base / model.name
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / str(version)
    partial = folder / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    exported_with = None
    try:
        if model_kind(model.source) == "saved_model":
            shutil.copytree(model.source, partial)
        else:
            exported_with = _export_keras(model.source, partial)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return final, exported_with


def write_tfserving(out: Path, models: Sequence[TFServingModel], version: int = 1) -> list[Path]:
    """Write each model as ``out/models/NAME/VERSION`` (a version already there is replaced),
    then models.config, monitoring.config and README.md; returns those paths, version folders
    first. ValueError for no model, a repeated name, a bad version or a non-TF source (checked
    before anything is written); OSError when writing fails."""
    if not models:
        raise ValueError(f"no model given: expected {EXPECTED}")
    if version < 1:
        raise ValueError(f"the version must be 1 or more (TF Serving's folder name), got {version}")
    names = [m.name for m in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"model name(s) {', '.join(repeated)} given twice: name them apart with NAME=PATH"
        )
    for model in models:
        model_kind(model.source)
    paths: list[Path] = []
    exported_with = None
    for model in models:
        path, tf_version = _place(model, out / "models", version)
        paths.append(path)
        exported_with = tf_version or exported_with
    texts = {
        MODELS_CONFIG_FILE: models_config(names),
        MONITORING_CONFIG_FILE: monitoring_config(),
        README_FILE: readme(names, version, exported_with),
    }
    return paths + write_texts(out, texts)
