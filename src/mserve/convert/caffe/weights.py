"""The learned blobs of a .caffemodel, found by layer name and checked against their shapes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mserve.convert.caffe.caffe_pb2 import BlobProto, LayerParameter, NetParameter
from mserve.convert.caffe.shapes import describe
from mserve.errors import ConversionError

#: What a layer expects: one (role, shape) per blob, e.g. ("weight", (64, 3, 3, 3)).
Expected = Sequence[tuple[str, tuple[int, ...]]]


class Weights:
    """Blobs of every layer in a .caffemodel, by layer name, as Caffe copies them into a net."""

    def __init__(self, model: NetParameter, source: str) -> None:
        self.source = source
        self._blobs: dict[str, Sequence[BlobProto]] = {}
        # Models saved before 2015 keep their layers in the V1 `layers` field; the blobs are the
        # same messages, so they load as well as new ones (Caffe upgrades them the same way).
        for v1 in model.layers:
            self._blobs[v1.name] = v1.blobs
        for layer in model.layer:
            self._blobs[layer.name] = layer.blobs
        self.legacy = bool(model.layers)

    def take(self, layer: LayerParameter, expected: Expected) -> list[np.ndarray]:
        """The layer's blobs as float32 arrays of the expected shapes.

        Raises :class:`ConversionError` naming the layer and the expected shapes when the
        .caffemodel has no blobs for it, too few, or one of another shape.
        """
        want = ", ".join(f"{role} {describe(shape)}" for role, shape in expected)
        blobs = self._blobs.get(layer.name, ())
        if not blobs:
            raise self._error(layer, f"has no learned blobs; expected {len(expected)}: {want}")
        if len(blobs) < len(expected):
            raise self._error(
                layer, f"has {len(blobs)} learned blob(s); expected {len(expected)}: {want}"
            )
        arrays = []
        for index, ((role, shape), blob) in enumerate(zip(expected, blobs, strict=False)):
            values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
            declared = _declared_shape(blob)
            if not _same_shape(declared, shape) or values.size != int(np.prod(shape)):
                raise self._error(
                    layer,
                    f"blob {index} ({role}) has shape {describe(declared)} with {values.size} "
                    f"values; expected shape {describe(shape)}",
                )
            arrays.append(values.reshape(shape))
        return arrays

    def _error(self, layer: LayerParameter, problem: str) -> ConversionError:
        return ConversionError(self.source, f"layer '{layer.name}' ({layer.type}) {problem}")


def _declared_shape(blob: BlobProto) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def _same_shape(declared: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-D shape matches when padded with leading 1s."""
    if declared == expected:
        return True
    if len(declared) == 4 and len(expected) <= 4:
        return declared == (1,) * (4 - len(expected)) + expected
    return False
