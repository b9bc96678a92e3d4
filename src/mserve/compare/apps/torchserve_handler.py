"""TorchServe's custom handler for the ONNX model: a ``BaseHandler`` whose ``initialize``
opens an ONNX Runtime session with the settings' threads (``BaseHandler``'s own ONNX support
takes every core) and whose steps turn TorchServe's list of requests into predictions.

It runs in TorchServe's Python worker from the extracted model archive, which also carries
``served_model.py`` and the settings file (``--extra-files``).

TorchServe's batching (``batchSize`` and ``maxBatchDelay`` in the archive's
``model-config.yaml``) hands ``handle`` several requests at once; each gets its own answer."""

from __future__ import annotations

import json
import os
from itertools import accumulate
from typing import Any

from served_model import ServedModel, load_settings
from ts.torch_handler.base_handler import BaseHandler

SETTINGS_FILE = "served-model.json"


class OnnxHandler(BaseHandler):
    """Plain JSON in (``{"instances": [...]}`` per request), predictions out."""

    def initialize(self, context: Any) -> None:
        """Open the session from the archive's settings."""
        model_dir = context.system_properties["model_dir"]
        self.model = ServedModel(load_settings(os.path.join(model_dir, SETTINGS_FILE)))
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> list[list[Any]]:
        """Each request's instances."""
        requests = []
        for request in data:
            body: Any = request.get("body") or request.get("data") or b"{}"
            if isinstance(body, bytes | bytearray):
                body = json.loads(body)
            requests.append(list(body["instances"]))
        return requests

    def inference(self, data: list[list[Any]], *args: Any, **kwargs: Any) -> list[list[Any]]:
        """Each request's predictions, from one run over all their instances."""
        rows = self.model.predict_rows([instance for request in data for instance in request])
        ends = accumulate(len(request) for request in data)
        return [rows[end - len(r) : end] for r, end in zip(data, ends, strict=True)]

    def postprocess(self, data: list[list[Any]]) -> list[dict[str, Any]]:
        """``{"predictions": [...]}`` per request."""
        return [{"predictions": predictions} for predictions in data]
