"""From an exported graph to verified variants in the model repository.

The steps, each reported through ``progress``:
1. check the graph, infer shapes, and run it once: a graph ONNX Runtime refuses is never accepted,
   even when the exporter said it succeeded;
2. compute the reference outputs (the original framework, or the graph as given);
3. fp32: slim the graph and save ONNX Runtime's portable passes; it must match exactly;
4. each further variant (fp16, int8, OpenVINO, pruned) is built, compared and timed;
5. the kept ones are written, each as its own model with a config.yaml, and the report beside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from mserve.config import DynamicBatching, ModelConfig, RuntimeOptions
from mserve.convert import optimize, variants
from mserve.convert.base import Exported
from mserve.convert.parity import Parity, Tolerance, accuracy, compare
from mserve.convert.report import ConversionReport, VariantReport, versions
from mserve.convert.signature import (
    batch_is_free,
    generate_inputs,
    graph_inputs,
    graph_outputs,
    resize_batch,
)
from mserve.convert.timing import Run, interleaved, paired_speedup, usable_cores
from mserve.errors import ConversionError, ParityError
from mserve.repository import valid_model_name, write_model

REPORT_FILE = "conversion.json"
#: At most this many rows of given data are compared (all of it counts for accuracy).
MAX_PARITY_ROWS = 512

#: progress(step, done, total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """What to make of an exported model, and how to judge it."""

    version: int = 1
    variants: tuple[str, ...] = ()  # by name, from VARIANTS
    optimize: str = "none"  # "auto": try every variant that applies, keep the faster ones
    tolerance: Tolerance = field(default_factory=Tolerance)
    inputs: Mapping[str, np.ndarray] | None = None  # parity data; generated when None
    calibration: Mapping[str, np.ndarray] | None = None  # int8-static
    eval_inputs: Mapping[str, np.ndarray] | None = None  # labelled data for accuracy
    labels: np.ndarray | None = None
    parity_rows: int = 64
    max_batch_size: int = 64
    measure: bool = True
    batches: tuple[int, ...] = (1, 32)
    threads: int = 0  # 0: usable cores, as the server
    slim: bool = True


@dataclass(frozen=True, slots=True)
class Pruned:
    """A pruned copy of the original, exported, with what pruning did."""

    name: str  # e.g. pruned-channels-50
    exported: Exported
    sparsity: float
    parameters: int
    notes: tuple[str, ...] = ()


def _quiet(step: str, done: int, total: int) -> None:
    """The default progress callback: silence."""


def _call(run: Run, feed: Mapping[str, np.ndarray], source: str, what: str) -> list[np.ndarray]:
    try:
        return run(feed)
    except Exception as exc:
        raise ConversionError(
            source, f"{what} fails on the test inputs: {variants.first_line(exc)}"
        ) from None


def _config(
    name: str, model: onnx.ModelProto, backend: str, max_batch: int, providers: tuple[str, ...]
) -> ModelConfig:
    """The config.yaml a converted model gets: its signature, and batching when it batches."""
    batching = batch_is_free(model) and max_batch > 0
    return ModelConfig(
        name=name,
        backend=backend,
        runtime=RuntimeOptions(execution_providers=providers),
        inputs=graph_inputs(model),
        outputs=graph_outputs(model),
        max_batch_size=max_batch if batching else 0,
        dynamic_batching=(
            DynamicBatching(max_queue_delay_us=1000, max_queue_size=16 * max_batch)
            if batching
            else None
        ),
    )


def _given_data(options: ConvertOptions) -> Mapping[str, np.ndarray] | None:
    """Real data to compare on, when the user gave any: parity inputs, else the labelled
    evaluation set, else the calibration set. Random inputs lie outside what a model was trained
    on, where quantised variants differ most; real data judges them as their users will."""
    for data in (options.inputs, options.eval_inputs, options.calibration):
        if data is not None:
            return data
    return None


def _feeds(
    exported: Exported, model: onnx.ModelProto, options: ConvertOptions
) -> tuple[dict[str, np.ndarray], dict[int, dict[str, np.ndarray]]]:
    """The parity inputs, and one input per timed batch size."""
    specs = graph_inputs(model, exported.framework)
    free = batch_is_free(model)
    given = _given_data(options)
    if given is not None:
        missing = [s.name for s in specs if s.name not in given]
        if missing:
            raise ConversionError(
                "--inputs",
                f"has no array for input(s) {', '.join(missing)}; "
                f"expected arrays named {', '.join(s.name for s in specs)}",
            )
        feed = {s.name: np.asarray(given[s.name][:MAX_PARITY_ROWS]) for s in specs}
    elif exported.sample:
        feed = {k: np.asarray(v) for k, v in exported.sample.items()}
        if free:
            feed = resize_batch(feed, options.parity_rows)
    else:
        feed = generate_inputs(specs, options.parity_rows if free else 1)
    rows = int(next(iter(feed.values())).shape[0]) if feed else 1
    timed = {b: resize_batch(feed, b) for b in options.batches if free or b == rows}
    return feed, timed


def _file_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


class Conversion:
    """One conversion: the shared inputs, the reference outputs, and a report that grows."""

    def __init__(
        self,
        exported: Exported,
        out: Path,
        options: ConvertOptions,
        progress: Progress = _quiet,
        source: str = "",
    ) -> None:
        self.exported = exported
        self.out = Path(out)
        self.options = options
        self.progress = progress
        self.source = source or exported.framework
        self.threads = options.threads or usable_cores()
        if not valid_model_name(self.out.name):
            raise ConversionError(
                str(out), "the last part of --out names the model: letters, digits, '_', '.', '-'"
            )
        self.report = ConversionReport(
            source=self.source,
            framework=exported.framework,
            model=self.out.name,
            version=options.version,
            notes=list(exported.notes),
            threads=self.threads,
            parity_data="given" if _given_data(options) is not None else "generated",
        )
        self.to_time: dict[str, tuple[VariantReport, Run]] = {}

    # -- the steps ---------------------------------------------------------------------------

    def accept(self) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
        """Check and run the graph as exported; the parity inputs and the reference outputs."""
        model = optimize.check(self.exported.model, self.source)
        self.report.inputs = graph_inputs(model, self.source)
        self.report.outputs = graph_outputs(model, self.source)
        feed, self.timed = _feeds(self.exported, model, self.options)
        got = _call(
            variants.session(model, self.source, self.threads),
            feed,
            self.source,
            "the exported graph",
        )
        if self.exported.reference is None:
            self.report.notes.append(
                "the original framework cannot run here: variants are compared with the graph "
                "as exported"
            )
            want = got
        else:
            try:
                want = [np.asarray(a) for a in self.exported.reference(feed)]
            except Exception as exc:
                raise ConversionError(self.source, f"the original model fails: {exc}") from None
        self.report.parity_rows = int(next(iter(feed.values())).shape[0]) if feed else 0
        self.names = [o.name for o in model.graph.output]
        return model, feed, want

    def judge(
        self,
        variant: VariantReport,
        model: onnx.ModelProto,
        run: Run,
        feed: Mapping[str, np.ndarray],
        want: Sequence[np.ndarray],
        exact: bool,
    ) -> Parity:
        """Compare and measure accuracy; fill ``variant`` in, and queue it for timing."""
        got = _call(run, feed, self.source, f"variant '{variant.name}'")
        parity = compare(
            self.names,
            got,
            want,
            self.options.tolerance,
            exact=exact,
            class_outputs=self.exported.class_outputs,
        )
        variant.parity = parity
        variant.size_bytes = _file_size(model)
        variant.nodes = optimize.node_count(model)
        o = self.options
        if o.eval_inputs is not None and o.labels is not None:
            outputs = _call(run, o.eval_inputs, self.source, f"variant '{variant.name}'")
            variant.accuracy = accuracy(outputs, self.names, self.exported.class_outputs, o.labels)
        if parity.ok:
            self.to_time[variant.name] = (variant, run)
        return parity

    def time(self) -> None:
        """Time every variant within tolerance, interleaved; speed-ups against fp32."""
        if not self.options.measure or not self.to_time or not self.timed:
            return
        runs = {name: run for name, (_, run) in self.to_time.items()}
        done = self.progress

        def tick(r: int, rounds: int) -> None:
            done(
                f"timing {len(runs)} variants at batch {self.batch_list()} (round {r}/{rounds})",
                0,
                0,
            )

        latencies = interleaved(runs, self.timed, progress=tick)
        base = {m.batch: m for m in latencies.get("fp32", [])}
        for name, (variant, _) in self.to_time.items():
            variant.latency = sorted(latencies[name], key=lambda m: m.batch)
            variant.speedup = {
                m.batch: paired_speedup(base[m.batch], m)
                for m in variant.latency
                if m.batch in base and m.p50_ms > 0
            }

    def batch_list(self) -> str:
        return ", ".join(str(b) for b in self.timed)

    def fp32(
        self, model: onnx.ModelProto, feed: Mapping[str, np.ndarray], want: Sequence[np.ndarray]
    ) -> tuple[VariantReport, onnx.ModelProto]:
        """The baseline: slimmed and ONNX Runtime's portable passes; must match exactly."""
        t = time.perf_counter()
        variant = VariantReport("fp32", self.out.name)
        candidate = model
        if self.options.slim:
            candidate, note = optimize.slim(candidate)
            variant.notes.append(note)
        try:
            candidate, note = optimize.ort_offline(candidate)
            variant.notes.append(note)
        except Exception as exc:
            variant.notes.append(f"onnxruntime offline passes skipped: {exc}")
        parity = self.judge(
            variant,
            candidate,
            variants.session(candidate, self.source, self.threads),
            feed,
            want,
            True,
        )
        if not parity.ok and candidate is not model:  # an optimisation broke it: use the export
            variant.notes.append("the optimised graph differs; kept the graph as exported")
            candidate = model
            parity = self.judge(
                variant, model, variants.session(model, self.source, self.threads), feed, want, True
            )
        if not parity.ok:
            raise ParityError(
                self.source,
                "fp32",
                "; ".join(parity.failures),
                self.options.tolerance.describe(True),
            )
        variant.kept = True
        variant.reason = "the baseline"
        variant.seconds = time.perf_counter() - t
        return variant, candidate

    def variant(
        self,
        name: str,
        fp32: onnx.ModelProto,
        feed: Mapping[str, np.ndarray],
        want: Sequence[np.ndarray],
        requested: bool,
    ) -> tuple[VariantReport, onnx.ModelProto | None]:
        """Build, compare and time one named variant of the fp32 graph, and give a verdict."""
        t = time.perf_counter()
        backend = "openvino" if name == "openvino" else "onnxruntime"
        variant = VariantReport(name, f"{self.out.name}-{name}", backend, requested)
        why_not = variants.not_applicable(name, fp32, bool(self.options.calibration))
        if why_not:
            variant.reason = why_not
            return variant, None
        try:
            model, run = variants.build(
                name, fp32, self.options.calibration or {}, self.threads, self.source
            )
        except ConversionError as exc:
            variant.reason = exc.problem
            return variant, None
        self.judge(variant, model, run, feed, want, exact=name in variants.EXACT)
        variant.seconds = time.perf_counter() - t
        return variant, model

    def pruned(self, p: Pruned) -> tuple[VariantReport, onnx.ModelProto | None]:
        """A pruned export: matched against the pruned original, timed against fp32."""
        t = time.perf_counter()
        variant = VariantReport(p.name, f"{self.out.name}-{p.name}")
        variant.sparsity = p.sparsity
        variant.parameters = p.parameters
        variant.notes.extend(p.notes)
        model = optimize.check(p.exported.model, self.source)
        feed, _ = _feeds(self.exported, model, self.options)
        if p.exported.reference is None:  # pragma: no cover - pruning always has torch
            raise ConversionError(p.name, "a pruned model needs its original to compare with")
        want = [np.asarray(a) for a in p.exported.reference(feed)]
        model, note = optimize.slim(model) if self.options.slim else (model, "")
        if note:
            variant.notes.append(note)
        parity = self.judge(
            variant,
            model,
            variants.session(model, self.source, self.threads),
            feed,
            want,
            exact=True,
        )
        if parity.ok:
            variant.kept = True
            variant.reason = f"sparsity {p.sparsity:.2f}"
        else:
            variant.reason = "the export differs from the pruned model: " + "; ".join(
                parity.failures
            )
        variant.seconds = time.perf_counter() - t
        return variant, model

    def write(self, variant: VariantReport, model: onnx.ModelProto) -> None:
        """Place a kept variant in the repository as its own model, with its config."""
        providers = variants.PROVIDERS.get(variant.name, ())
        config = _config(
            variant.model, model, variant.backend, self.options.max_batch_size, providers
        )
        path = write_model(self.out.parent, config, self.options.version, model.SerializeToString())
        variant.written = str(path)


def convert_exported(
    exported: Exported,
    out: Path,
    options: ConvertOptions | None = None,
    *,
    pruned: Sequence[Pruned] = (),
    progress: Progress = _quiet,
    source: str = "",
) -> ConversionReport:
    """Verify ``exported``, derive the variants, write the kept ones under ``out``'s repository
    (``out`` is ``REPO/NAME``) with ``conversion.json`` beside; returns the report.

    Raises ConversionError when the graph does not run, ParityError when fp32 or a variant asked
    for by name computes something else (the report is written first).
    """
    import json

    options = options or ConvertOptions()
    unknown = [v for v in options.variants if v not in variants.VARIANTS]
    if unknown:
        expected = ", ".join(variants.VARIANTS)
        raise ConversionError(
            "--variants", f"unknown variant(s) {', '.join(unknown)}; expected {expected}"
        )
    if "int8-static" in options.variants and not options.calibration:
        raise ConversionError("int8-static", "needs calibration data: --calibrate DATA.npz")
    started = time.perf_counter()
    job = Conversion(exported, out, options, progress, source)
    names = list(options.variants)
    if options.optimize == "auto":
        names += [v for v in variants.VARIANTS if v not in names]
    total = 2 + len(names) + len(pruned)
    progress("checking and running the exported graph", 0, total)
    model, feed, want = job.accept()
    progress("fp32: optimising the graph and checking parity", 1, total)
    base, fp32 = job.fp32(model, feed, want)
    built: list[tuple[VariantReport, onnx.ModelProto | None]] = [(base, fp32)]
    for i, name in enumerate(names):
        progress(f"{name}: building, checking parity, timing", 2 + i, total)
        built.append(job.variant(name, fp32, feed, want, name in options.variants))
    for i, p in enumerate(pruned):
        progress(f"{p.name}: exporting, checking parity, timing", 2 + len(names) + i, total)
        built.append(job.pruned(p))
    job.time()
    for variant, _ in built[1 : 1 + len(names)]:
        variants.verdict(variant, options.measure)
    for variant, _ in built[1 + len(names) :]:
        if variant.kept and variant.speedup:
            variant.reason += "; " + variants.speed(variant)
    report = job.report
    report.variants = [v for v, _ in built]
    for variant, m in built:
        if variant.kept and m is not None:
            job.write(variant, m)
    report.versions = versions(exported.framework)
    report.seconds = time.perf_counter() - started
    (Path(out) / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    progress("done", total, total)
    failed = [v for v in report.variants if v.requested and v.parity and not v.parity.ok]
    if failed:
        v = failed[0]
        raise ParityError(
            job.source,
            v.name,
            "; ".join(v.parity.failures) if v.parity else "",
            options.tolerance.describe(v.name in variants.EXACT),
        )
    return report
