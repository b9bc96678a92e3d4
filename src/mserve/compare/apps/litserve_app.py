"""LitServe: a ``litserve.LitAPI`` running ONNX Runtime, served by ``LitServer`` on the CPU
with one inference worker, as LitServe's documentation builds one. Plain JSON:
``POST /predict`` with ``{"instances": [...]}`` answers ``{"predictions": [...]}``; readiness
at ``/health``.

LitServe's batching: ``LitAPI(max_batch_size=..., batch_timeout=...)``; its ``batch`` gets one
decoded request per element (each a list of instances) and ``unbatch`` hands one result back
per request.

No ``from __future__ import annotations`` here: LitServe builds its route from the annotation
of ``decode_request``'s parameter, and a string annotation turns the body into a query
parameter (every request then fails with 422)."""

import signal
from itertools import accumulate
from typing import Any

import litserve as ls
from served_model import ServedModel, Settings, load_settings


class OnnxAPI(ls.LitAPI):
    """The ONNX model as a LitServe API, every request run alone."""

    def __init__(self, settings: Settings, **batching: Any) -> None:
        super().__init__(**batching)
        self.settings = settings

    def setup(self, device: str) -> None:
        """Open the ONNX Runtime session."""
        self.model = ServedModel(self.settings)

    def decode_request(self, request: dict[str, Any]) -> list[Any]:
        """The request's instances."""
        return list(request["instances"])

    def predict(self, x: list[Any]) -> list[Any]:
        """Predictions for one request's instances."""
        return self.model.predict_rows(x)

    def encode_response(self, output: list[Any]) -> dict[str, Any]:
        """``{"predictions": [...]}``."""
        return {"predictions": output}


class BatchedOnnxAPI(OnnxAPI):
    """The ONNX model as a LitServe API with LitServe's batching."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings,
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.max_delay_us / 1e6,
        )

    def batch(self, inputs: list[list[Any]]) -> list[list[Any]]:
        """The requests' instance lists, kept apart until ``predict``."""
        return inputs

    def predict(self, x: list[Any]) -> list[Any]:
        """Each request's predictions, from one run over all their instances."""
        rows = self.model.predict_rows([instance for request in x for instance in request])
        ends = accumulate(len(request) for request in x)
        return [rows[end - len(request) : end] for request, end in zip(x, ends, strict=True)]

    def unbatch(self, output: list[Any]) -> list[Any]:
        """One request's predictions each."""
        return output


def main() -> None:
    """Serve until stopped."""
    settings = load_settings()
    api = BatchedOnnxAPI(settings) if settings.batching else OnnxAPI(settings)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    # stop as on Ctrl+C: LitServer then stops its API and inference processes too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server.run(host="127.0.0.1", port=settings.port, generate_client_file=False)


if __name__ == "__main__":
    main()
