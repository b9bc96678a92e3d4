"""Which framework made a model file, and how to export it: one place that knows them all.

Every framework module is imported only when its framework is converted, so converting an
scikit-learn model never imports torch or TensorFlow.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve.convert.base import FRAMEWORKS, Exported
from mserve.errors import ConversionError

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A trained model to convert and what its exporter needs to know."""

    path: str | None  # a file or folder; None with ``factory`` alone (PyTorch)
    framework: str | None = None  # None: detected from the file
    factory: str | None = None  # PyTorch: ``package.module:function`` building the module
    weights: str | None = None  # Caffe: the .caffemodel beside the deploy.prototxt
    input_shapes: tuple[tuple[str | None, tuple[int, ...]], ...] = ()  # (name or None, dims)
    output_names: tuple[str, ...] = ()
    sequence_axis: int | None = None  # PyTorch: a second free axis of every input (tokens)
    class_outputs: tuple[str, ...] = ()
    signature: str = "serving_default"  # TensorFlow SavedModel
    exporter: str = "auto"  # PyTorch: auto | dynamo | torchscript
    trust: bool = False  # allow formats whose loading runs code (pickle, joblib, Keras Lambda)
    opset: int = 17
    examples: tuple[Any, ...] = ()  # PyTorch: example input arrays to trace with, in order
    input_dtypes: tuple[str, ...] = ()  # PyTorch: the dtype of each input_shapes entry

    @property
    def name(self) -> str:
        return self.path or self.factory or "model"


def detect(spec: SourceSpec) -> str:
    """The framework of ``spec``: as named, or recognised from the file's name and bytes."""
    if spec.framework:
        if spec.framework not in FRAMEWORKS:
            raise ConversionError(
                spec.name,
                f"unknown framework '{spec.framework}'; expected one of {', '.join(FRAMEWORKS)}",
            )
        return spec.framework
    if spec.path is None or _FACTORY.match(spec.path):
        return "pytorch"
    path = Path(spec.path)
    if not path.exists():
        raise ConversionError(spec.path, "no such file or folder")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tensorflow"
        raise ConversionError(
            spec.path, "is a folder without saved_model.pb; expected a TensorFlow SavedModel"
        )
    suffix = path.suffix.lower()
    by_suffix = {
        ".onnx": "onnx",
        ".keras": "tensorflow",
        ".h5": "tensorflow",
        ".prototxt": "caffe",
        ".caffemodel": "caffe",
        ".pt2": "pytorch",
        ".pt": "pytorch",
        ".pth": "pytorch",
        ".ts": "pytorch",
        ".ubj": "xgboost",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    if suffix == ".json":
        return _json_kind(path)
    if suffix in (".txt", ".model"):
        with path.open("rb") as file:
            head = file.read(64)
        if head.startswith(b"tree") or b"version=v" in head:
            return "lightgbm"
    if suffix in (".pkl", ".pickle", ".joblib"):
        return "pickle"
    if zipfile.is_zipfile(path):
        return "pytorch"
    raise ConversionError(
        spec.path,
        "cannot tell which framework made this file; name it with --framework "
        f"({', '.join(FRAMEWORKS)})",
    )


def _json_kind(path: Path) -> str:
    try:
        with path.open("rb") as file:
            head = json.loads(file.read())
    except (ValueError, OSError) as exc:
        raise ConversionError(str(path), f"is not readable JSON: {exc}") from None
    if isinstance(head, dict) and "learner" in head:
        return "xgboost"
    raise ConversionError(str(path), "is JSON but not an XGBoost model (no 'learner' key)")


def _n_features(spec: SourceSpec) -> int | None:
    if not spec.input_shapes:
        return None
    dims = spec.input_shapes[0][1]
    return dims[-1] if dims and dims[-1] > 0 else None


def _from_pickle(spec: SourceSpec) -> tuple[str, Any]:
    """Unpickle (only when trusted) and name the framework by the object's type."""
    from mserve.convert.sklearn import load_pickle

    obj = load_pickle(Path(spec.name), spec.trust)
    module = type(obj).__module__.split(".")[0]
    if module in ("xgboost", "lightgbm"):
        return module, obj
    if module == "sklearn" or hasattr(obj, "fit"):
        return "sklearn", obj
    raise ConversionError(
        spec.name, f"holds a {type(obj).__module__}.{type(obj).__name__}, not a model we convert"
    )


def export(spec: SourceSpec) -> tuple[Exported, Any]:
    """Export ``spec`` to ONNX; also returns the loaded PyTorch model (for pruning), else None."""
    framework = detect(spec)
    if framework == "pickle":
        framework, obj = _from_pickle(spec)
        if framework == "sklearn":
            from mserve.convert.sklearn import sklearn_export

            return sklearn_export(obj, _n_features(spec), spec.name), None
        from mserve.convert.boosting import boosting_export

        return boosting_export(obj, framework, _n_features(spec), spec.name), None
    path = Path(spec.path) if spec.path else None
    if framework != "pytorch" and (path is None or not path.exists()):
        raise ConversionError(spec.name, "no such file or folder")
    file = path or Path(spec.name)
    if framework == "onnx":
        return _onnx(file), None
    if framework == "sklearn":
        from mserve.convert.sklearn import load_pickle, sklearn_export

        return sklearn_export(load_pickle(file, spec.trust), _n_features(spec), spec.name), None
    if framework in ("xgboost", "lightgbm"):
        from mserve.convert import boosting

        if file.suffix.lower() in (".pkl", ".pickle", ".joblib"):
            from mserve.convert.sklearn import load_pickle

            model = load_pickle(file, spec.trust)
        elif framework == "xgboost":
            model = boosting.load_xgboost(file)
        else:
            model = boosting.load_lightgbm(file)
        return boosting.boosting_export(model, framework, _n_features(spec), spec.name), None
    if framework == "tensorflow":
        from mserve.convert.tensorflow import tensorflow_to_onnx

        shapes = {n: list(d) for n, d in spec.input_shapes if n}
        if len(shapes) != len(spec.input_shapes):
            raise ConversionError(
                spec.name, "TensorFlow inputs are named: give --input-shape NAME=DIMS"
            )
        exported = tensorflow_to_onnx(
            file,
            signature=spec.signature,
            input_shapes=shapes or None,
            opset=spec.opset,
            trust=spec.trust,
        )
        return exported, None
    if framework == "caffe":
        return _caffe(spec, file), None
    return _pytorch(spec)


def _onnx(path: Path) -> Exported:
    """An ONNX file, with the graph as given as its own reference."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ConversionError(str(path), f"is not an ONNX model: {exc}") from None
    return Exported(model=model, framework="onnx", notes=("the graph as given is the reference",))


def _caffe(spec: SourceSpec, path: Path) -> Exported:
    """Caffe needs both files: the deploy.prototxt and the .caffemodel."""
    from mserve.convert.caffe import caffe_to_onnx

    if path.suffix.lower() == ".caffemodel":
        prototxt, weights = spec.weights, path
        if prototxt is None:
            beside = path.with_name("deploy.prototxt")
            if not beside.is_file():
                raise ConversionError(
                    str(path), "a .caffemodel needs its deploy.prototxt: pass --weights the other"
                )
            prototxt = str(beside)
        return caffe_to_onnx(Path(prototxt), weights, opset=spec.opset)
    if spec.weights is None:
        raise ConversionError(
            str(path), "a deploy.prototxt needs its weights: --weights MODEL.caffemodel"
        )
    return caffe_to_onnx(path, Path(spec.weights), opset=spec.opset)


def _pytorch(spec: SourceSpec) -> tuple[Exported, Any]:
    from mserve.convert.pytorch import pytorch_to_onnx
    from mserve.convert.pytorch_load import load_pytorch

    path, factory = spec.path, spec.factory
    if path is not None and _FACTORY.match(path) and not Path(path).exists():
        path, factory = None, factory or path
    source = load_pytorch(path, factory=factory, trust=spec.trust)
    given = [n for n, _ in spec.input_shapes]
    names = [n for n in given if n] if given and all(given) else None
    axes = None
    if spec.sequence_axis is not None:
        count = max(len(spec.input_shapes), 1)
        keys = names or (["input"] if count == 1 else [f"input_{i}" for i in range(count)])
        axes = {k: {0: "batch", spec.sequence_axis: "sequence"} for k in keys}
    exported = pytorch_to_onnx(
        source,
        input_shapes=[d for _, d in spec.input_shapes] or None,
        example_inputs=list(spec.examples) or None,
        dtypes=list(spec.input_dtypes) or None,
        input_names=names,
        output_names=list(spec.output_names) or None,
        dynamic_axes=axes,
        opset=spec.opset,
        exporter=spec.exporter,
        class_outputs=spec.class_outputs,
    )
    return exported, source
