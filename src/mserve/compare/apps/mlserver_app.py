"""Seldon MLServer: a custom inference runtime (an ``MLModel`` running ONNX Runtime, as
MLServer has no ONNX runtime of its own), named by ``implementation`` in the
``model-settings.json`` its launcher writes; ``mlserver start FOLDER`` serves it over V2 HTTP
and gRPC. Tensors travel through MLServer's ``NumpyCodec``.

MLServer's adaptive batching (``max_batch_size`` and ``max_batch_time`` in
``model-settings.json``) merges requests before ``predict`` and splits the response after it;
this class sees batches either way."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from served_model import ServedModel, load_settings


class OnnxModel(MLModel):
    """The ONNX model behind MLServer's V2 data plane."""

    async def load(self) -> bool:
        """Open the ONNX Runtime session."""
        self._model = ServedModel(load_settings())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode the V2 inputs, run the model, encode its outputs."""
        feed = {x.name: NumpyCodec.decode_input(x) for x in payload.inputs}
        outputs = self._model.run(feed)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in outputs.items()],
        )
