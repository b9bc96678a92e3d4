"""The baseline: the FastAPI wrapper of an ONNX model that a user would write by hand.

One ONNX Runtime session (one intra-op thread, as the server gets one core) behind a
``POST /v2/models/digits/infer`` route that takes and returns V2 JSON. No binary extension, no
batching, no validation beyond what the pydantic models give. Run it as a user would, with
uvicorn's defaults::

    NAIVE_MODEL_PATH=models/digits/1/model.onnx \\
        uvicorn naive_fastapi:app --app-dir benchmarks --host 127.0.0.1 --port 8001

Two variants, so the comparison is not against a straw man:

- ``app``: what the FastAPI tutorials teach: pydantic request / response models and a plain
  ``def`` handler (FastAPI runs it in its thread pool, as advised for blocking calls).
- ``app_lean``: the cheapest hand-written form: the body as a ``dict`` and an ``async def``
  handler that calls ONNX Runtime directly on the event loop.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_NAME = "digits"


def _session() -> ort.InferenceSession:
    """The model's session, from ``NAIVE_MODEL_PATH``, with one intra-op thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("NAIVE_INTRA_OP_THREADS", "1"))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.environ["NAIVE_MODEL_PATH"], sess_options=so, providers=["CPUExecutionProvider"]
    )


session = _session()
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]
_V2_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


class RequestInput(BaseModel):
    """One V2 input tensor in JSON."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferenceRequest(BaseModel):
    """A V2 inference request in JSON."""

    id: str | None = None
    inputs: list[RequestInput]


class ResponseOutput(BaseModel):
    """One V2 output tensor in JSON."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float | int]


class InferenceResponse(BaseModel):
    """A V2 inference response in JSON."""

    model_name: str
    id: str | None = None
    outputs: list[ResponseOutput]


def _outputs(results: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "shape": list(arr.shape),
            "datatype": _V2_TYPES[arr.dtype],
            "data": arr.reshape(-1).tolist(),
        }
        for name, arr in zip(output_names, results, strict=True)
    ]


app = FastAPI()


@app.post(f"/v2/models/{MODEL_NAME}/infer", response_model=InferenceResponse)
def infer(request: InferenceRequest) -> InferenceResponse:
    """Run the model on the request's one input (tutorial style)."""
    x = request.inputs[0]
    arr = np.asarray(x.data, dtype=np.float32).reshape(x.shape)
    results = session.run(output_names, {input_name: arr})
    return InferenceResponse(
        model_name=MODEL_NAME,
        id=request.id,
        outputs=[ResponseOutput(**o) for o in _outputs(results)],
    )


app_lean = FastAPI()


@app_lean.post(f"/v2/models/{MODEL_NAME}/infer", response_model=None)
async def infer_lean(request: dict[str, Any]) -> dict[str, Any]:
    """Run the model on the request's one input (the body as a dict, on the event loop)."""
    x = request["inputs"][0]
    arr = np.asarray(x["data"], dtype=np.float32).reshape(x["shape"])
    results = session.run(output_names, {input_name: arr})
    return {"model_name": MODEL_NAME, "outputs": _outputs(results)}
