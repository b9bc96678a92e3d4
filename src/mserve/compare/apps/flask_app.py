"""The hand-written baseline with Flask: the V2 JSON routes a user who wants a
V2-compatible wrapper around ONNX Runtime would write, run by gunicorn::

    MSERVE_COMPARE_MODEL=model.json gunicorn --workers 1 --threads 4 flask_app:app

One worker process, as every system here gets one; its threads share one ONNX Runtime
session (gunicorn's gthread worker, which also keeps connections alive)."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, request
from served_model import ServedModel, load_settings


def create_app(model: ServedModel) -> Flask:
    """The app serving ``model`` at ``/v2/models/NAME/infer``, with its metadata and the
    V2 health routes."""
    app = Flask(__name__)

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    def health() -> dict[str, Any]:
        return {}

    @app.get(f"/v2/models/{model.name}")
    def metadata() -> dict[str, Any]:
        return model.metadata_v2()

    @app.post(f"/v2/models/{model.name}/infer")
    def infer() -> dict[str, Any]:
        body = request.get_json(silent=True)
        try:
            return model.infer_v2(body)
        except (KeyError, ValueError, TypeError) as exc:
            abort(400, f"bad request: {exc}")

    return app


app = create_app(ServedModel(load_settings()))
