"""Does a converted model compute the original's function? Figures and a verdict.

Two standards. An *exact* variant (the fp32 export, its graph optimisations, another runtime at
fp32) must match element by element: ``|got - want| <= atol + rtol * |want|`` everywhere, as
``numpy.allclose`` counts it. An *approximate* variant (fp16, int8, pruned) cannot, so it is judged
by what its users see: the cosine similarity of each output row with the original's, and for
classifiers the share of rows whose top-1 class is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mserve.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The bounds a variant must stay within (see the module docstring)."""

    atol: float = 1e-4
    rtol: float = 1e-3
    cosine: float = 0.99  # mean cosine similarity of rows, approximate variants
    top1: float = 0.95  # share of rows with the same top-1 class (or the same integer output)

    def describe(self, exact: bool) -> str:
        if exact:
            return f"atol {self.atol:g}, rtol {self.rtol:g}, top-1 {self.top1:g}"
        return f"mean cosine >= {self.cosine:g}, top-1 >= {self.top1:g}"


def parse_tolerance(text: str, base: Tolerance | None = None) -> Tolerance:
    """``atol=1e-4,rtol=1e-3,cosine=0.99,top1=0.95`` (any subset) over ``base``."""
    values = asdict(base or Tolerance())
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in values:
            raise ConfigError(
                "--tolerance", key or part, f"one of {', '.join(values)} as key=value"
            )
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError("--tolerance", key, "a number", raw) from None
        if not value >= 0 or (key in ("cosine", "top1") and value > 1):
            raise ConfigError("--tolerance", key, "a number >= 0 (at most 1 for cosine, top1)", raw)
        values[key] = value
    return Tolerance(**values)


@dataclass(frozen=True, slots=True)
class OutputParity:
    """How one output differs from the original's."""

    name: str
    max_abs: float | None = None  # float outputs
    max_rel: float | None = None  # max_abs / the largest magnitude of the original output
    cosine_mean: float | None = None
    cosine_min: float | None = None
    allclose: bool | None = None
    top1: float | None = None  # class outputs: rows whose argmax agrees
    agreement: float | None = None  # integer / boolean / string outputs: elements equal

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class Parity:
    """Every output's figures and the verdict under a tolerance."""

    outputs: tuple[OutputParity, ...]
    exact: bool
    ok: bool
    failures: tuple[str, ...]  # what broke the tolerance, in words with numbers
    rows: int

    def summary(self) -> str:
        """The figures a user reads first, e.g. ``max abs 3.1e-06, cosine 1.00000, top-1 1.000``."""
        parts: list[str] = []
        float_outs = [o for o in self.outputs if o.max_abs is not None]
        if float_outs:
            parts.append(f"max abs {max(o.max_abs or 0.0 for o in float_outs):.2g}")
            parts.append(f"cosine {min(o.cosine_mean or 0.0 for o in float_outs):.5f}")
        tops = [o.top1 for o in self.outputs if o.top1 is not None]
        tops += [o.agreement for o in self.outputs if o.agreement is not None]
        if tops:
            parts.append(f"top-1 {min(tops):.3f}")
        return ", ".join(parts) or "no comparable outputs"

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "standard": "exact" if self.exact else "approximate",
            "rows": self.rows,
            "failures": list(self.failures),
            "outputs": [o.to_dict() for o in self.outputs],
        }


def _rows(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    return flat.astype(np.float64)


def _cosine(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g, w = _rows(got), _rows(want)
    dot = np.sum(g * w, axis=1)
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)
    same_zero = (norms == 0) & np.all(g == w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(same_zero, 1.0, cos)


def compare_output(
    name: str, got: np.ndarray, want: np.ndarray, tolerance: Tolerance, is_class: bool
) -> OutputParity:
    """The figures for one output; raises nothing (a shape mismatch is a failure with words)."""
    if got.shape != want.shape:
        return OutputParity(name, allclose=False, agreement=0.0)
    if want.dtype.kind == "f" or got.dtype.kind == "f":
        g, w = got.astype(np.float64), want.astype(np.float64)
        if not np.array_equal(np.isfinite(g), np.isfinite(w)):  # NaN or inf where none was
            return OutputParity(name, max_abs=float("inf"), allclose=False, cosine_mean=0.0)
        g, w = np.nan_to_num(g), np.nan_to_num(w)
        diff = np.abs(g - w)
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(w).max()) if w.size else 0.0
        cos = _cosine(g, w) if w.size and w.ndim >= 1 else np.ones(1)
        top1 = None
        if is_class and w.ndim >= 2 and w.shape[-1] > 1:
            top1 = float(np.mean(np.argmax(g, axis=-1) == np.argmax(w, axis=-1)))
        return OutputParity(
            name,
            max_abs=max_abs,
            max_rel=max_abs / scale if scale > 0 else max_abs,
            cosine_mean=float(np.mean(cos)),
            cosine_min=float(np.min(cos)),
            allclose=bool(np.all(diff <= tolerance.atol + tolerance.rtol * np.abs(w))),
            top1=top1,
        )
    equal = got == want
    return OutputParity(name, agreement=float(np.mean(equal)) if equal.size else 1.0)


def compare(
    names: Sequence[str],
    got: Sequence[np.ndarray],
    want: Sequence[np.ndarray],
    tolerance: Tolerance,
    *,
    exact: bool,
    class_outputs: Sequence[str] = (),
) -> Parity:
    """Compare a variant's outputs (``got``) with the original's (``want``), output by output."""
    outputs: list[OutputParity] = []
    failures: list[str] = []
    for name, g, w in zip(names, got, want, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        o = compare_output(name, g, w, tolerance, name in class_outputs)
        outputs.append(o)
        if g.shape != w.shape:
            failures.append(f"'{name}' has shape {list(g.shape)}, expected {list(w.shape)}")
            continue
        if o.max_abs is not None:
            if exact and not o.allclose:
                failures.append(
                    f"'{name}' max abs error {o.max_abs:.3g} (max rel {o.max_rel:.3g}) "
                    f"exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g}"
                )
            elif not exact and (o.cosine_mean or 0.0) < tolerance.cosine:
                failures.append(
                    f"'{name}' mean cosine similarity {o.cosine_mean:.5f} < {tolerance.cosine:g}"
                )
            if o.top1 is not None and o.top1 < tolerance.top1:
                failures.append(f"'{name}' top-1 agreement {o.top1:.3f} < {tolerance.top1:g}")
        elif o.agreement is not None and o.agreement < tolerance.top1:
            failures.append(
                f"'{name}' agrees on {o.agreement:.3f} of its values, "
                f"expected >= {tolerance.top1:g}"
            )
    rows = int(np.asarray(want[0]).shape[0]) if want and np.asarray(want[0]).ndim else 1
    return Parity(tuple(outputs), exact, not failures, tuple(failures), rows)


def accuracy(
    outputs: Sequence[np.ndarray],
    names: Sequence[str],
    class_outputs: Sequence[str],
    labels: np.ndarray,
) -> float | None:
    """Top-1 accuracy from the first class output (or an integer label output)."""
    for name, out in zip(names, outputs, strict=True):
        if name in class_outputs and out.ndim == 2:
            return float(np.mean(np.argmax(out, axis=1) == labels))
    for out in outputs:
        if out.dtype.kind in "iu" and out.shape == labels.shape:
            return float(np.mean(out == labels))
    return None
