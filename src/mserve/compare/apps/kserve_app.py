"""KServe's Python model server: a ``kserve.Model`` running ONNX Runtime, served by
``kserve.ModelServer`` with one worker, as KServe's custom-predictor documentation shows. Its
REST server answers the V2 protocol (``/v2/models/NAME/infer``, metadata from
``get_input_types`` / ``get_output_types``) and V1 (``/v1/models/NAME:predict``, plain
``{"instances": [...]}``) side by side; gRPC V2 on a second port.

KServe's model server has no dynamic batching of its own (KServe batches in a sidecar agent in
front of the pod, outside this process); every request runs alone."""

from __future__ import annotations

from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid
from served_model import ServedModel, Settings, load_settings


class OnnxModel(Model):
    """The ONNX model as a KServe predictor."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.name)
        self.settings = settings
        self.load()

    def load(self) -> bool:
        """Open the ONNX Runtime session."""
        self.model = ServedModel(self.settings)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        """The inputs, for the V2 metadata."""
        return [_tensor(t) for t in self.settings.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The outputs, for the V2 metadata."""
        return [_tensor(t) for t in self.settings.outputs]

    async def predict(
        self,
        payload: InferRequest | dict[str, Any],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict[str, Any]:
        """V2: tensors in, tensors out. V1: instances in, predictions out."""
        if isinstance(payload, dict):
            return {"predictions": self.model.predict_rows(payload["instances"])}
        outputs = self.model.run({x.name: x.as_numpy() for x in payload.inputs})
        return InferResponse(
            response_id=payload.id or generate_uuid(),  # KServe answers with an id
            model_name=self.name,
            infer_outputs=[
                InferOutput(name=name, shape=list(v.shape), datatype=_datatype(self, name), data=v)
                for name, v in outputs.items()
            ],
        )


def _tensor(t: Any) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def _datatype(model: OnnxModel, output: str) -> str:
    (found,) = [t.datatype for t in model.settings.outputs if t.name == output]
    return str(found)


def main() -> None:
    """Serve until stopped."""
    settings = load_settings()
    server = ModelServer(http_port=settings.port, grpc_port=settings.grpc_port, workers=1)
    server.start([OnnxModel(settings)])


if __name__ == "__main__":
    main()
