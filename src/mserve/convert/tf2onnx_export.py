"""Run tf2onnx on a ``tf.function`` and refuse a graph it could not finish.

tf2onnx logs what it cannot convert and still returns a graph, with the TensorFlow op left in it
under the ONNX domain (ONNX Runtime then refuses the graph). Its warnings become notes; ops that
ONNX does not define become a :class:`ConversionError` that names them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import onnx

from mserve.errors import ConversionError

#: Known unsupported TensorFlow ops -> what to do about them.
HINTS = {
    "Erfc": "from exact GELU, gelu(approximate=False); approximate=True converts",
}
MAX_NOTE = 300  # characters kept of one tf2onnx log message


def run_tf2onnx(
    function: Callable[..., Any], specs: list[Any], opset: int, source: str
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Convert ``function`` (traced on ``specs``) at ``opset``: the graph and notes on it."""
    import tf2onnx

    with _tf2onnx_log() as records:
        try:
            model, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset)
        except Exception as exc:  # tf2onnx raises whatever its handlers raise
            raise ConversionError(source, f"tf2onnx failed: {type(exc).__name__}: {exc}") from exc
    notes = [f"exported with tf2onnx {tf2onnx.__version__} at opset {opset}"]
    notes += _messages(records)
    unsupported = sorted(_logged_unsupported(records) | _undefined_ops(model.graph))
    if unsupported:
        described = ", ".join(f"{op} ({HINTS[op]})" if op in HINTS else op for op in unsupported)
        raise ConversionError(
            source,
            f"tf2onnx cannot express these TensorFlow ops in ONNX opset {opset}: {described}. "
            "Replace them in the model with ops ONNX supports",
        )
    return model, tuple(notes)


class _Collector(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _tf2onnx_log() -> Iterator[list[logging.LogRecord]]:
    """Collect tf2onnx's warnings and errors instead of printing them, for one conversion."""
    logger = logging.getLogger("tf2onnx")
    collector, propagate = _Collector(), logger.propagate
    logger.addHandler(collector)
    logger.propagate = False
    try:
        yield collector.records
    finally:
        logger.removeHandler(collector)
        logger.propagate = propagate


def _messages(records: list[logging.LogRecord]) -> list[str]:
    """Each distinct logged message once, as a note."""
    seen: dict[str, None] = {}
    for record in records:
        text = record.getMessage().strip().splitlines()[0][:MAX_NOTE]
        seen.setdefault(f"tf2onnx {record.levelname.lower()}: {text}", None)
    return list(seen)


def _logged_unsupported(records: list[logging.LogRecord]) -> set[str]:
    """Op types from tf2onnx's ``Unsupported ops: Counter(...)`` summary."""
    ops: set[str] = set()
    for record in records:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("Unsupported ops") and args and isinstance(args[0], Mapping):
            ops.update(str(op) for op in args[0])
    return ops


def _undefined_ops(graph: onnx.GraphProto) -> set[str]:
    """Op types in the default ONNX domain that ONNX does not define (in subgraphs too)."""
    ops: set[str] = set()
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            ops.add(node.op_type)
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                ops |= _undefined_ops(subgraph)
    return ops
