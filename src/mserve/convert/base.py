"""What every framework converter hands to the conversion pipeline.

A converter turns one trained model into an ONNX graph and, where the original framework can
still run here, a *reference*: a function that runs the original model on the same inputs. The
pipeline (:mod:`mserve.convert.pipeline`) loads and runs every graph before it accepts it, checks
it against the reference, derives the optimised variants, and writes the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

#: Runs the original model: input name -> array in, the outputs in the ONNX graph's output order.
Reference = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]

#: Frameworks ``mserve convert`` knows, as ``--framework`` names them.
FRAMEWORKS = ("pytorch", "tensorflow", "sklearn", "xgboost", "lightgbm", "caffe", "onnx")


@dataclass(frozen=True, slots=True)
class Exported:
    """A model exported to ONNX, with what is needed to verify it."""

    model: onnx.ModelProto
    framework: str
    reference: Reference | None = None  # None: the original cannot run here (e.g. Caffe)
    #: Example inputs the converter knows (from ``--input-shape``, example inputs, or the data it
    #: traced with); the pipeline generates inputs from the graph's signature when empty.
    sample: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: Outputs whose argmax along the last axis is a class: parity reports top-1 agreement.
    class_outputs: tuple[str, ...] = ()
    #: What the converter did that a user should know (the exporter used, a fallback taken).
    notes: tuple[str, ...] = ()
