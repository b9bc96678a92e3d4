"""The model every system serves, read from a model folder of a repository or a bare ``.onnx``.

    models/digits            a model folder: config.yaml (optional) and 1/model.onnx, 2/...
    resnet.onnx              a bare ONNX file: its signature comes from the graph

A model folder's config.yaml gives the signature and ``max_batch_size`` when it has them; what
it lacks comes from the ONNX graph (the latest version the folder's policy selects). A bare file
whose every input and output has a free first axis gets ``DEFAULT_MAX_BATCH``; otherwise 0 (no
batch axis, so no dynamic batching).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from mserve.compare.systems import ModelUnderTest, TensorInfo
from mserve.config import CONFIG_FILE
from mserve.convert.signature import batch_is_free, graph_inputs, graph_outputs
from mserve.errors import ConversionError, RepositoryError
from mserve.protocol import TensorSpec
from mserve.repository import Repository, valid_model_name

#: the batch limit of a model whose config does not give one (the digits config's 64)
DEFAULT_MAX_BATCH = 64


def model_under_test(path: Path | str, threads: int = 1) -> ModelUnderTest:
    """The model at ``path`` (a model folder ``REPO/NAME`` or a ``.onnx`` file), served with
    ``threads`` ONNX Runtime intra-op threads; ValueError saying what is wrong with the path."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder; expected REPO/NAME or a .onnx file")
    if path.is_file():
        return _from_file(path, threads)
    return _from_folder(path, threads)


def _from_file(path: Path, threads: int) -> ModelUnderTest:
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: not an ONNX file; expected REPO/NAME or a .onnx file")
    name = path.stem
    if not valid_model_name(name):
        raise ValueError(
            f"{path}: '{name}' cannot name a model (letters, digits, '_', '.', '-'); "
            "rename the file or put it in a repository"
        )
    graph = _load(path)
    inputs, outputs = _signature(graph, path)
    max_batch = DEFAULT_MAX_BATCH if batch_is_free(graph) else 0
    return ModelUnderTest(name, path.resolve(), inputs, outputs, max_batch, threads)


def _from_folder(path: Path, threads: int) -> ModelUnderTest:
    folder = path.resolve()
    if not (folder / CONFIG_FILE).is_file() and not _has_version_folder(folder):
        models = [p.name for p in sorted(folder.iterdir()) if _has_version_folder(p)]
        if models:
            raise ValueError(
                f"{path}: a model repository, not one model; name one of its models, "
                f"e.g. {path / models[0]}"
            )
        raise ValueError(
            f"{path}: not a model folder; expected NAME/config.yaml and NAME/1/model.onnx, "
            "or a .onnx file"
        )
    try:
        source = Repository(folder.parent).source(folder.name)
    except RepositoryError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if source.error is not None:
        raise ValueError(f"{path}: cannot be served: {source.error}")
    model_file = source.versions[max(source.versions)]
    config = source.config
    inputs = _infos(config.inputs) if config is not None else ()
    outputs = _infos(config.outputs) if config is not None else ()
    if not inputs or not outputs:  # what the config leaves out comes from the graph
        graph_in, graph_out = _signature(_load(model_file), model_file)
        inputs, outputs = inputs or graph_in, outputs or graph_out
    if config is not None:
        max_batch = config.max_batch_size
    else:
        max_batch = DEFAULT_MAX_BATCH if _batch_axis(inputs + outputs) else 0
    return ModelUnderTest(source.name, model_file, inputs, outputs, max_batch, threads)


def _has_version_folder(folder: Path) -> bool:
    return folder.is_dir() and any(
        (v / "model.onnx").is_file() for v in folder.iterdir() if v.name.isdigit()
    )


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others, untyped
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from None


def _signature(
    graph: onnx.ModelProto, path: Path
) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    try:
        return _infos(graph_inputs(graph, str(path))), _infos(graph_outputs(graph, str(path)))
    except ConversionError as exc:
        raise ValueError(str(exc)) from None


def _infos(specs: tuple[TensorSpec, ...]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(s.name, s.datatype, tuple(s.shape)) for s in specs)


def _batch_axis(tensors: tuple[TensorInfo, ...]) -> bool:
    return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)
