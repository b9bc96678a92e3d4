"""BentoML: a service class with one ``@bentoml.api`` method, run by
``bentoml serve bentoml_app:Classifier`` with one worker, as BentoML's documentation builds a
service. Plain JSON: ``POST /predict`` with ``{"instances": [...]}`` (BentoML maps the body's
fields to the method's parameters) answers ``{"predictions": [...]}``'s list itself.

BentoML's adaptive batching: ``batchable=True`` with ``max_batch_size``; BentoML sizes its own
wait from the latencies it observes (``max_latency_ms`` is a deadline, left at its default).
The settings decide the decorator's arguments, so they are read when this module loads."""

from __future__ import annotations

from typing import Any

import bentoml
from served_model import ServedModel, load_settings

SETTINGS = load_settings()
BATCHING: dict[str, Any] = (
    {"batchable": True, "max_batch_size": SETTINGS.max_batch_size} if SETTINGS.batching else {}
)


@bentoml.service(workers=1)
class Classifier:
    """The ONNX model as a BentoML service."""

    def __init__(self) -> None:
        self.model = ServedModel(SETTINGS)

    @bentoml.api(**BATCHING)
    def predict(self, instances: list[Any]) -> list[dict[str, Any]]:
        """One prediction per instance (with batching: per instance of every request merged)."""
        return self.model.predict_rows(instances)
