"""The hand-written baseline with FastAPI: the V2 JSON routes a user who wants a
V2-compatible wrapper around ONNX Runtime would write, run by uvicorn with one worker::

    MSERVE_COMPARE_MODEL=model.json uvicorn fastapi_app:app --port 8000

A plain ``def`` handler with the body as a dict: FastAPI runs it in its thread pool, as its
documentation advises for blocking calls such as ONNX Runtime's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from served_model import ServedModel, load_settings


def create_app(model: ServedModel) -> FastAPI:
    """The app serving ``model`` at ``/v2/models/NAME/infer``, with its metadata and the
    V2 health routes."""
    app = FastAPI()

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health() -> dict[str, Any]:
        return {}

    @app.get(f"/v2/models/{model.name}")
    def metadata() -> dict[str, Any]:
        return model.metadata_v2()

    @app.post(f"/v2/models/{model.name}/infer")
    def infer(request: dict[str, Any]) -> dict[str, Any]:
        try:
            return model.infer_v2(request)
        except (KeyError, ValueError, TypeError) as exc:
            raise HTTPException(status_code=400, detail=f"bad request: {exc}") from None

    return app


app = create_app(ServedModel(load_settings()))
