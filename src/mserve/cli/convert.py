"""``mserve convert SRC --out REPO/NAME``: a trained model into verified ONNX variants."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from mserve.cli.exit_codes import OK
from mserve.errors import ConfigError

EPILOG = """\
frameworks and what SRC is:
  pytorch     a TorchScript file, a torch.export .pt2 program, or a state_dict checkpoint with
              --factory package.module:function (loaded with weights_only=True); SRC may also be
              the factory itself
  tensorflow  a SavedModel folder, a .keras or an .h5 file (pip install 'mserve[tensorflow]')
  sklearn     a pickle or joblib file (needs --trust: unpickling runs code)
  xgboost     an XGBoost .json or .ubj model file (or a trusted pickle)
  lightgbm    a LightGBM text model file (or a trusted pickle)
  caffe       a deploy.prototxt with --weights MODEL.caffemodel
  onnx        an .onnx file: checked, shape-inferred and optimised like the rest

variants (each kept one becomes its own model, NAME-VARIANT, beside NAME):
  fp16          fp16 weights and arithmetic; inputs and outputs keep their types
  int8-dynamic  int8 weights per channel, activations quantised at run time (MatMul, Gemm)
  int8-static   int8 QDQ, weights per channel, activations calibrated on --calibrate DATA.npz
  openvino      the fp32 graph served by OpenVINO instead of ONNX Runtime
  cuda          the fp32 graph on ONNX Runtime's CUDA provider (where this build and a GPU have it)
  tensorrt      the fp32 graph on ONNX Runtime's TensorRT provider (likewise)
  --optimize auto tries every variant that applies and keeps those within tolerance that run
  faster than fp32 on this machine (geometric mean over the timed batch sizes >= 1.05x).

data files are .npz archives with one array per model input (named after it; a one-input
model takes any single name) and, for --eval and --finetune, the labels in an array 'labels'.

exit status: 0 converted, 1 the conversion failed, 2 bad options or an untrusted file,
6 a parity failure: the converted model computes something else (the figures are printed).

examples:
  mserve convert model.pt2 --out models/cnn --optimize auto --calibrate calib.npz
  mserve convert cnn.pt --factory mypkg.nets:make_cnn --input-shape 1,1,8,8 --out models/cnn \\
      --prune channels=0.5 --finetune train.npz --eval test.npz
  mserve convert saved_model/ --out models/mlp --variants int8-dynamic
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a trained model to optimised, verified ONNX in a model repository",
        description=textwrap.fill(
            "Convert a trained model (PyTorch, TensorFlow/Keras, scikit-learn, XGBoost, "
            "LightGBM, Caffe or ONNX) into ONNX, check that it computes the original's function "
            "on the same inputs, derive optimised variants (graph optimisation, fp16, int8, "
            "pruning, OpenVINO), time each at batch 1 and 32 on this machine, and write the "
            "kept ones with a config.yaml into the model repository, with a conversion report "
            "(REPO/NAME/conversion.json).",
            width=88,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SRC", help="the trained model (see below)")
    p.add_argument(
        "--out", required=True, type=Path, metavar="REPO/NAME", help="where the model goes"
    )
    p.add_argument("--version", type=int, default=1, help="version folder to write (default 1)")
    p.add_argument("--framework", help="the source framework, when it cannot be detected")
    p.add_argument("--factory", metavar="PKG.MOD:FN", help="PyTorch: function building the module")
    p.add_argument("--weights", metavar="FILE", help="Caffe: the .caffemodel of a deploy.prototxt")
    p.add_argument(
        "--input-shape",  # PyTorch without it traces on the first rows of --inputs
        action="append",
        default=[],
        metavar="[NAME=]DIMS[:DTYPE]",
        help="an input's full shape, batch first, e.g. 1,3,32,32 or input_ids=1,128:int64; repeat "
        "per input (PyTorch: the example to trace with, float32 unless a dtype is given; "
        "scikit-learn and trees: --input-shape=-1,FEATURES, with '=' as the value starts with '-')",
    )
    p.add_argument("--output-names", metavar="A,B", help="PyTorch: names for the outputs")
    p.add_argument(
        "--sequence-axis", type=int, metavar="AXIS", help="PyTorch: a second free axis of inputs"
    )
    p.add_argument(
        "--class-outputs",
        metavar="A,B",
        help="outputs holding class scores: parity reports top-1 agreement for them",
    )
    p.add_argument("--signature", default="serving_default", help="TensorFlow: the signature")
    p.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="PyTorch exporter; auto tries torch.export first, then the TorchScript one",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset to export (default 17)")
    p.add_argument(
        "--trust",
        action="store_true",
        help="allow files whose loading runs code (pickle, joblib, Keras Lambda layers)",
    )
    p.add_argument(
        "--variants",
        metavar="A,B",
        default="",
        help="fp16, int8-dynamic, int8-static, openvino, cuda, tensorrt",
    )
    p.add_argument(
        "--optimize",
        choices=("none", "auto"),
        default="none",
        help="auto: try every variant, keep the faster ones within tolerance",
    )
    p.add_argument("--calibrate", type=Path, metavar="DATA.npz", help="int8-static calibration")
    p.add_argument(
        "--inputs", type=Path, metavar="DATA.npz", help="parity inputs (default: generated)"
    )
    p.add_argument(
        "--eval", type=Path, metavar="DATA.npz", help="labelled data: accuracy of each variant"
    )
    p.add_argument(
        "--prune",
        action="append",
        default=[],
        metavar="KIND=AMOUNT",
        help="PyTorch: unstructured=0.5 (zero the smallest weights) or channels=0.5 (remove "
        "whole channels and units); each becomes a variant; repeatable",
    )
    p.add_argument(
        "--finetune", type=Path, metavar="DATA.npz", help="labelled data to fine-tune pruned models"
    )
    p.add_argument(
        "--finetune-seconds", type=float, default=15.0, help="fine-tuning time (default 15)"
    )
    p.add_argument(
        "--tolerance",
        default="",
        metavar="K=V,...",
        help="parity bounds: atol (1e-4), rtol (1e-3) for exact variants; cosine (0.99), "
        "top1 (0.95) for approximate ones",
    )
    p.add_argument(
        "--max-batch-size", type=int, default=64, help="config.yaml's max_batch_size (default 64)"
    )
    p.add_argument("--no-measure", action="store_true", help="skip the latency measurements")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def _dims(text: str) -> tuple[str | None, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.partition(":")[0].split(","))
    except ValueError:
        raise ConfigError(
            "--input-shape", text, "[NAME=]DIMS[:DTYPE] like 1,3,32,32 or input_ids=1,128:int64"
        ) from None
    return (name or None) if sep else None, shape


def _dtypes(texts: list[str]) -> tuple[str, ...]:
    """The dtype of each --input-shape (float32 unless it says ':DTYPE'); () when none says."""
    import numpy as np

    given = [text.rpartition("=")[2].partition(":")[2] for text in texts]
    if not any(given):
        return ()
    for text, dtype in zip(texts, given, strict=True):
        try:
            np.dtype(dtype or "float32")
        except TypeError:
            raise ConfigError("--input-shape", text, "a numpy dtype like int64 after ':'") from None
    return tuple(d or "float32" for d in given)


def _prune(text: str) -> tuple[str, float]:
    kind, _, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = -1.0
    if kind not in ("unstructured", "channels") or not 0 < value < 1:
        raise ConfigError("--prune", text, "unstructured=AMOUNT or channels=AMOUNT, 0 < AMOUNT < 1")
    return kind, value


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def run(args: argparse.Namespace) -> int:
    from mserve.cli.console import console as make_console
    from mserve.convert import ConvertOptions, SourceSpec, convert
    from mserve.convert.parity import parse_tolerance

    spec = SourceSpec(
        path=args.source,
        framework=args.framework,
        factory=args.factory,
        weights=args.weights,
        input_shapes=tuple(_dims(s) for s in args.input_shape),
        input_dtypes=_dtypes(args.input_shape),
        output_names=_names(args.output_names),
        sequence_axis=args.sequence_axis,
        class_outputs=_names(args.class_outputs),
        signature=args.signature,
        exporter=args.exporter,
        trust=args.trust,
        opset=args.opset,
    )
    options = ConvertOptions(
        version=args.version,
        variants=_names(args.variants),
        optimize=args.optimize,
        tolerance=parse_tolerance(args.tolerance),
        max_batch_size=args.max_batch_size,
        measure=not args.no_measure,
    )
    console = make_console(stderr=args.json)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("loading the model", total=None)

        def progress(step: str, done: int, total: int) -> None:
            if total:
                bar.update(task, description=step, completed=done, total=total)
            else:
                bar.update(task, description=step)

        report = convert(
            spec,
            args.out,
            options,
            inputs=args.inputs,
            calibrate=args.calibrate,
            eval_data=args.eval,
            prune=tuple(_prune(p) for p in args.prune),
            finetune=args.finetune,
            finetune_seconds=args.finetune_seconds,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return OK
    _print(console, report, args.out)
    return OK


def _print(console: Any, report: Any, out: Path) -> None:
    from rich.table import Table

    from mserve.convert.report import TABLE_HEADER, table_rows

    table = Table(title=f"{report.source} ({report.framework}) -> {out}")
    for column in TABLE_HEADER:
        table.add_column(column, overflow="fold")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    best = report.recommended()
    if best is not None:
        console.print(f"fastest kept at batch 1: [bold]{best.model}[/] ({best.name})")
    console.print(f"report: {out / 'conversion.json'}")
