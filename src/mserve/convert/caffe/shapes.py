"""Blob shapes as the converter tracks them, and Caffe's rules for computing them.

A dimension is an ``int``, or a ``str`` naming a size that depends on the batch: ``"batch"``
itself, or a product such as ``"batch*12"`` after a flatten. The functions here are pure; they
raise :class:`LayerError`, which the walk turns into a ``ConversionError`` naming the layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Dim = int | str
Shape = tuple[Dim, ...]

#: The symbolic name of the batch dimension every input starts with.
BATCH = "batch"


class LayerError(Exception):
    """A layer cannot be converted; the message says why, without naming the layer."""


def describe(shape: Sequence[Dim]) -> str:
    """``(batch, 3, 8, 8)``: a shape as messages print it."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def factors(dim: Dim) -> tuple[int, list[str]]:
    """Split a dimension into its static factor and its symbolic factors."""
    if isinstance(dim, int):
        return dim, []
    static, symbols = 1, []
    for part in dim.split("*"):
        if part.isdigit():
            static *= int(part)
        else:
            symbols.append(part)
    return static, symbols


def product(dims: Iterable[Dim]) -> Dim:
    """The size of the given dimensions flattened into one."""
    static, symbols = 1, []
    for dim in dims:
        value, names = factors(dim)
        static *= value
        symbols += names
    if not symbols:
        return static
    return "*".join(sorted(symbols) + ([str(static)] if static != 1 else []))


def static_dim(dim: Dim, what: str) -> int:
    """``dim`` as an int; raises when it depends on the batch size."""
    if isinstance(dim, str):
        raise LayerError(f"{what} must not depend on the batch size, but is {dim}")
    return dim


def axis_index(axis: int, rank: int, *, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: a possibly negative axis as an index into ``rank`` axes."""
    index = axis + rank if axis < 0 else axis
    if not 0 <= index < rank:
        raise LayerError(f"{what} {axis} is out of range for a blob with {rank} axes")
    return index


def reshape_target(shape: Shape) -> list[int]:
    """The ONNX Reshape target for ``shape``: static sizes, and -1 for the batch-dependent one."""
    dynamic = [d for d in shape if isinstance(d, str)]
    if len(dynamic) > 1:
        raise LayerError(
            f"the result {describe(shape)} has more than one batch-dependent dimension, "
            "which an ONNX Reshape cannot express"
        )
    return [-1 if isinstance(d, str) else d for d in shape]


def caffe_reshape(shape: Shape, spec: Sequence[int], axis: int, num_axes: int) -> Shape:
    """The shape Caffe's Reshape layer gives ``shape``.

    ``spec`` replaces axes ``[axis, axis + num_axes)`` (``num_axes`` -1: to the end); a 0 keeps
    the input's dimension at that position, one -1 is inferred from the element count.
    """
    rank = len(shape)
    start = axis + rank + 1 if axis < 0 else axis
    if not 0 <= start <= rank:
        raise LayerError(f"reshape axis {axis} is out of range for a blob with {rank} axes")
    if num_axes < -1:
        raise LayerError(f"num_axes must be -1 or more, got {num_axes}")
    end = rank if num_axes == -1 else start + num_axes
    if end > rank:
        raise LayerError(f"axes [{start}, {end}) run past the {rank} axes of the input")
    out: list[Dim] = list(shape[:start])
    infer_at: int | None = None
    for j, size in enumerate(spec):
        if size == 0:
            if start + j >= rank:
                raise LayerError(f"dim {j} is 0 (copy) but the input has no axis {start + j}")
            out.append(shape[start + j])
        elif size == -1:
            if infer_at is not None:
                raise LayerError("at most one dim may be -1")
            infer_at = len(out)
            out.append(1)
        elif size < -1:
            raise LayerError(f"dim {j} is {size}; dims must be positive, 0 (copy) or -1 (infer)")
        else:
            out.append(size)
    out += shape[end:]
    in_static, in_symbols = factors(product(shape))
    out_static, out_symbols = factors(product(out))
    left = list(in_symbols)
    for symbol in out_symbols:
        if symbol not in left:
            raise LayerError(f"the new shape {describe(out)} does not fit {describe(shape)}")
        left.remove(symbol)
    if infer_at is not None and in_static % out_static == 0:
        out[infer_at] = product([*left, in_static // out_static])
        return tuple(out)
    if infer_at is None and not left and in_static == out_static:
        return tuple(out)
    hint = (
        "; keep the batch axis with dim: 0 or infer it with dim: -1, since the converted model "
        "accepts any batch size"
        if left
        else ""
    )
    raise LayerError(
        f"shape {list(spec)} does not hold the same number of elements as the "
        f"{describe(shape)} input{hint}"
    )
