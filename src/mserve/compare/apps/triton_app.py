"""NVIDIA Triton through PyTriton: Triton's own server (bundled in the ``nvidia-pytriton``
wheel) in front of a Python inference callable that runs ONNX Runtime, bound the way PyTriton's
documentation binds a model. Triton's V2 HTTP endpoint on the settings' port, its gRPC and
metrics endpoints on two more.

Triton's batching: ``ModelConfig(max_batch_size=..., batcher=DynamicBatcher(...))`` with
``@batch`` stacking the requests Triton grouped; without batching, ``batcher=None`` (each
request runs alone).

The tritonserver binary and its Python backend stub link libpython: they find it through
``LD_LIBRARY_PATH``, which this program extends with the folder holding this interpreter's
libpython before Triton starts (on the CPU nothing else is needed)."""

from __future__ import annotations

import os
import signal
import sysconfig
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from served_model import ServedModel, Settings, load_settings


def with_libpython(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with the folder holding libpython first on ``LD_LIBRARY_PATH``."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    path = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    return {**environ, "LD_LIBRARY_PATH": os.pathsep.join([libdir, *path])}


def model_config(settings: Settings) -> ModelConfig:
    """Triton's model configuration: its dynamic batcher when batching."""
    if settings.max_batch_size == 0:
        return ModelConfig(batching=False)
    batcher = (
        DynamicBatcher(max_queue_delay_microseconds=settings.max_delay_us)
        if settings.batching
        else None
    )
    return ModelConfig(max_batch_size=settings.max_batch_size, batcher=batcher)


def tensors(settings: Settings, which: str) -> list[Tensor]:
    """PyTriton's tensor specs: shapes without the batch axis when there is one; a tensor of
    one scalar per row is ``(1,)`` as Triton wants dims (so ``[batch, 1]`` on the wire)."""
    skip = 1 if settings.max_batch_size else 0
    return [
        Tensor(name=t.name, dtype=t.dtype, shape=t.shape[skip:] or (1,))
        for t in getattr(settings, which)
    ]


def scalar_rows(settings: Settings) -> set[str]:
    """The tensors that hold one scalar per row: ``[batch]`` to the model, ``[batch, 1]`` to
    Triton."""
    every = (*settings.inputs, *settings.outputs)
    return {t.name for t in every if settings.max_batch_size and len(t.shape) == 1}


def main() -> None:
    """Bind the model and serve until stopped."""
    settings = load_settings()
    model = ServedModel(settings)
    scalars = scalar_rows(settings)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, Any]:
        feed = {k: v.reshape(-1) if k in scalars else v for k, v in inputs.items()}
        outputs = model.run(feed)
        return {k: v.reshape(-1, 1) if k in scalars else v for k, v in outputs.items()}

    os.environ.update(with_libpython(dict(os.environ)))
    # stop on SIGTERM as on Ctrl+C: leaving the with block stops tritonserver too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=settings.port,
        grpc_address="127.0.0.1",
        grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=settings.name,
            infer_func=infer,
            inputs=tensors(settings, "inputs"),
            outputs=tensors(settings, "outputs"),
            config=model_config(settings),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
