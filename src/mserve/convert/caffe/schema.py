"""Reading deploy.prototxt (text) and .caffemodel (binary) files into NetParameter messages.

The messages come from ``caffe_pb2``, generated from ``caffe.proto`` beside this module (see its
header for how to regenerate them).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from mserve.convert.caffe.caffe_pb2 import NetParameter
from mserve.errors import ConversionError

_UPGRADE = (
    "it uses the pre-2015 `layers` format (V1LayerParameter), which mserve does not read; "
    "rewrite it with Caffe's upgrade tool first: upgrade_net_proto_text OLD.prototxt "
    "NEW.prototxt"
)


def read_prototxt(path: Path) -> tuple[NetParameter, tuple[str, ...]]:
    """Parse a network definition; returns it and notes on what was ignored.

    Fields this schema does not declare (settings of layers mserve does not convert, or of
    forks of Caffe) are skipped with a note rather than refused.
    """
    source = str(path)
    text = _read(path).decode("utf-8", errors="replace")
    net = NetParameter()
    notes: tuple[str, ...] = ()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as strict:
        if "has no field named" not in str(strict):
            raise ConversionError(source, f"not a Caffe network definition: {strict}") from None
        net = NetParameter()
        try:
            text_format.Parse(text, net, allow_unknown_field=True)
        except text_format.ParseError as error:
            raise ConversionError(source, f"not a Caffe network definition: {error}") from None
        notes = (f"ignored prototxt fields mserve does not read (the first: {strict})",)
    if len(net.layers):
        raise ConversionError(source, _UPGRADE)
    if not len(net.layer):
        raise ConversionError(source, "defines no layers")
    return net, notes


def read_caffemodel(path: Path) -> NetParameter:
    """Parse the binary NetParameter holding a network's learned blobs."""
    source = str(path)
    model = NetParameter()
    try:
        model.ParseFromString(_read(path))
    except DecodeError as error:
        raise ConversionError(
            source, f"not a Caffe .caffemodel (a binary NetParameter): {error}"
        ) from None
    if not len(model.layer) and not len(model.layers):
        raise ConversionError(source, "holds no layers, so no learned blobs")
    return model


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise ConversionError(str(path), "is a directory, not a file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(str(path), "no such file") from None
    except OSError as error:
        raise ConversionError(str(path), f"cannot be read: {error.strerror or error}") from None
