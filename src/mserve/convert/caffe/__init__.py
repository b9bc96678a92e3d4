"""Caffe models (deploy.prototxt + .caffemodel) -> ONNX.

Both files are NetParameter messages, read with the protobuf package from the subset of Caffe's
schema in ``caffe.proto``; Caffe itself is not needed, and cannot run here to serve as a
reference. :mod:`.net` walks the layers, :mod:`.layers` holds one converter per layer type.
"""

from __future__ import annotations

from pathlib import Path

import onnx.defs

from mserve.convert.base import Exported
from mserve.convert.caffe.net import SUPPORTED, convert_net
from mserve.convert.caffe.schema import read_caffemodel, read_prototxt
from mserve.convert.caffe.weights import Weights
from mserve.errors import ConversionError

__all__ = ["SUPPORTED", "caffe_to_onnx"]

#: Softmax over one axis (not the flattened tail) needs opset 13.
MIN_OPSET = 13


def caffe_to_onnx(prototxt: Path, caffemodel: Path, opset: int = 17) -> Exported:
    """Convert the net in ``prototxt`` with the learned blobs in ``caffemodel``.

    The first axis of every input becomes a free ``batch`` axis. The outputs are the blobs the
    net writes and never reads, named as in Caffe; those written by a final Softmax are the
    ``class_outputs``. There is no reference: Caffe cannot run here. Raises
    :class:`ConversionError` for unreadable files, pre-2015 (V1) prototxt files, layer types
    mserve does not convert (naming them and listing those it does), and missing or
    wrongly shaped blobs (naming the layer and the expected shape).
    """
    prototxt, caffemodel = Path(prototxt), Path(caffemodel)
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConversionError(
            str(prototxt), f"opset {opset} is not supported: use {MIN_OPSET} to {newest}"
        )
    net, notes = read_prototxt(prototxt)
    weights = Weights(read_caffemodel(caffemodel), str(caffemodel))
    converted = convert_net(net, weights, str(prototxt), opset)
    return Exported(
        model=converted.model,
        framework="caffe",
        reference=None,
        class_outputs=converted.class_outputs,
        notes=(
            *notes,
            *converted.notes,
            "no reference run: Caffe is not available here, so the ONNX graph is checked but "
            "its outputs are not compared with Caffe's",
        ),
    )
