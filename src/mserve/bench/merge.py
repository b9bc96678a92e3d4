"""One result from the results of several ``mserve bench`` processes that ran at the same time
against one target (the pods of ``mserve deploy bench-job``), in the schema of a single run.

Steps are matched by position and must carry the same load; the merged load is the sum (the
concurrency, or the rate, of every worker). Exact where a result holds the samples: latency
histograms add bucket by bucket, so every latency percentile, its confidence interval, the
mean, min and max are computed again from the merged histogram; counts, errors and throughputs
add, since the workers ran in parallel. Figures whose samples a result does not hold (the
``service_ms`` and ``send_lag_ms`` percentiles, the timeline's per-window p50 and p99) become
the largest of the workers' values: an upper bound, as a percentile of a mixture never exceeds
the largest percentile of its parts. The server-side breakdown is not summed (every worker read
the same server's counters): it is the first worker's, named in ``server.scraped_by``.

Summed throughput is what the server carried only if the workers measured at the same time:
each step's ``overlap`` compares the workers' wall-clock intervals (``measured_unix_s``), and a
warning is added when they overlap for less than ``MIN_OVERLAP_PCT`` of their span. Pure
functions of the documents.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mserve.bench.histogram import Histogram
from mserve.bench.result import SCHEMA, load_label
from mserve.bench.stats import merge_errors, summarize

#: Below this share of their span the workers' measurements overlap too little to add up.
MIN_OVERLAP_PCT = 90.0
#: Target fields every worker must share.
TARGET_FIELDS = ("protocol", "url", "model", "version", "method", "inputs")
#: Settings every worker must share (workers, seed and max_connections may differ).
SETTINGS_FIELDS = (
    "warmup_s",
    "window_s",
    "stability_pct",
    "stable_windows",
    "max_duration_s",
    "duration_s",
    "timeout_s",
)

Source = tuple[str, Mapping[str, Any]]  # (a name for messages: the file, the document)


class Mismatch(ValueError):
    """A worker's result differs from the first one's where runs of one benchmark agree."""

    def __init__(self, source: str, field: str, found: Any, reference: str, expected: Any) -> None:
        self.source, self.field, self.found = source, field, found
        self.reference, self.expected = reference, expected
        super().__init__(
            f"{source}: {field} is {found!r}, but {expected!r} in {reference}: only results "
            "of one benchmark, run at the same time against one target, merge"
        )


def check_mergeable(sources: Sequence[Source]) -> None:
    """ValueError (``Mismatch`` for a differing field) unless the documents can be merged."""
    if not sources:
        raise ValueError("nothing to merge: give the result files of the workers")
    for name, doc in sources:
        if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
            schema = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
            raise ValueError(f"{name}: not a benchmark result ({SCHEMA}), schema {schema!r}")
        if not isinstance(doc.get("steps"), list):
            raise ValueError(f"{name}: a benchmark result without a list of steps")
        if doc.get("slo"):
            raise ValueError(
                f"{name}: an SLO search: each worker chose its own loads, so its steps do not "
                "line up with the others'; run fixed loads (--concurrency or --rate) instead"
            )
    ref, first = sources[0]
    for name, doc in sources[1:]:
        for group, keys in (("target", TARGET_FIELDS), ("settings", SETTINGS_FIELDS)):
            a, b = first.get(group) or {}, doc.get(group) or {}
            for key in keys:
                if a.get(key) != b.get(key):
                    raise Mismatch(name, f"{group}.{key}", b.get(key), ref, a.get(key))
        if len(doc["steps"]) != len(first["steps"]):
            raise Mismatch(name, "the number of steps", len(doc["steps"]), ref, len(first["steps"]))
        for i, (sa, sb) in enumerate(zip(first["steps"], doc["steps"], strict=True), start=1):
            if not _same_load(sa.get("load") or {}, sb.get("load") or {}):
                label_a, label_b = (
                    load_label(sa.get("load") or {}),
                    load_label(sb.get("load") or {}),
                )
                raise Mismatch(name, f"the load of step {i}", label_b, ref, label_a)


def _same_load(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same load, but for the seed (each worker draws its own arrivals and inputs)."""
    if a.get("mode") != b.get("mode"):
        return False
    if a.get("mode") == "closed":
        return bool(a.get("concurrency") == b.get("concurrency"))
    return a.get("arrival") == b.get("arrival") and math.isclose(
        float(a.get("rate") or 0), float(b.get("rate") or 0), rel_tol=1e-9
    )


def merge_results(
    sources: Sequence[Source], command: Sequence[str], run_id: str | None = None
) -> dict[str, Any]:
    """The merged result document of ``sources`` (see the module docstring); ``command`` is
    the merging command line, ``run_id`` the new run's id (random by default). Warnings go to
    ``merge_warnings``; ValueError (``Mismatch``) when the documents do not merge."""
    check_mergeable(sources)
    first = sources[0][1]
    steps, warnings = [], []
    for i in range(len(first["steps"])):
        step, step_warnings = merge_steps([(name, doc["steps"][i]) for name, doc in sources])
        label = load_label(step["load"])
        steps.append(step)
        warnings += [f"step {i + 1} ({label}): {w}" for w in step_warnings]
    settings = dict(first.get("settings") or {})
    for key in ("workers", "max_connections"):
        if key in settings:
            settings[key] = sum(int((doc.get("settings") or {}).get(key, 0)) for _, doc in sources)
    return {
        "schema": SCHEMA,
        "id": run_id or uuid.uuid4().hex[:12],
        "created": min(str(doc.get("created", "")) for _, doc in sources),
        "command": list(command),
        "machine": _machines([doc.get("machine") or {} for _, doc in sources]),
        "target": dict(first.get("target") or {}),
        "settings": settings,
        "steps": steps,
        "slo": None,
        "merged_from": [
            {
                "file": name,
                "id": doc.get("id"),
                "created": doc.get("created"),
                "host": (doc.get("machine") or {}).get("hostname"),
                "command": doc.get("command"),
            }
            for name, doc in sources
        ],
        "merge_warnings": warnings,
    }


def _machines(machines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each field the workers' machines share; where they differ, the distinct values as text."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in machines for k in m):
        values = list(dict.fromkeys(m.get(key) for m in machines))
        merged[key] = values[0] if len(values) == 1 else ", ".join(str(v) for v in values)
    return merged


def _histogram(
    name: str, step: Mapping[str, Any], reference: tuple[str, Histogram] | None
) -> Histogram:
    try:
        h = Histogram.from_dict(step["histogram"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name}: a step without a usable latency histogram: {exc}") from None
    if reference is not None and h.layout != reference[1].layout:
        raise Mismatch(name, "the histogram layout", h.layout, reference[0], reference[1].layout)
    return h


def merge_steps(steps: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """One step from the same step of every worker (``(name, step)`` pairs, loads already
    checked to agree), and the warnings about it."""
    name0, s0 = steps[0]
    merged = _histogram(name0, s0, None)
    for name, s in steps[1:]:
        merged.merge(_histogram(name, s, (name0, merged)))
    ok = sum(int(s.get("count", 0)) for _, s in steps)
    errors: dict[str, int] = {}
    for _, s in steps:
        errors = merge_errors(errors, s.get("errors") or {})
    duration_s = max(float(s.get("duration_s") or 0.0) for _, s in steps)
    summary = summarize(merged, ok, errors, duration_s or 1.0)
    summary["throughput_rps"] = round(sum(float(s.get("throughput_rps", 0)) for _, s in steps), 3)
    timeline = _timeline([s.get("timeline") or [] for _, s in steps])
    intervals = [s.get("measured_unix_s") for _, s in steps]
    overlap, warnings = _overlap(intervals, [name for name, _ in steps])
    load = dict(s0.get("load") or {})
    step: dict[str, Any] = {
        "load": load,
        "duration_s": round(duration_s, 3),
        "windows": len(timeline),
        "measured_unix_s": None
        if overlap is None
        else [min(i[0] for i in intervals if i), max(i[1] for i in intervals if i)],
        "overlap": overlap,
        "stable": _stable([s.get("stable") for _, s in steps]),
        "stability_spread_pct": _spread([s.get("stability_spread_pct") for _, s in steps]),
        **summary,
        "inferences_per_s": round(sum(float(s.get("inferences_per_s", 0)) for _, s in steps), 3),
        "service_ms": _upper_bounds([s.get("service_ms") or {} for _, s in steps]),
    }
    if load.get("mode") == "closed":
        load["concurrency"] = sum(int(s["load"]["concurrency"]) for _, s in steps)
    else:
        load["rate"] = round(sum(float(s["load"]["rate"]) for _, s in steps), 6)
        step["requested_rate_rps"] = load["rate"]
        for key in ("achieved_rate_rps", "scheduled_rate_rps"):
            step[key] = round(sum(float(s.get(key, 0)) for _, s in steps), 3)
        lags = [s.get("send_lag_ms") or {} for _, s in steps]
        step["send_lag_ms"] = _upper_bounds(lags)  # max is exact, p50 and p99 bounds
    step["generator"] = _generator(steps)
    step["warmup"] = {
        "requests": sum(int((s.get("warmup") or {}).get("requests", 0)) for _, s in steps),
        "ok": sum(int((s.get("warmup") or {}).get("ok", 0)) for _, s in steps),
        "errors": _errors([(s.get("warmup") or {}).get("errors") or {} for _, s in steps]),
    }
    step["server"] = _server(steps, summary["latency_ms"]["mean"])
    step["timeline"] = timeline
    step["histogram"] = merged.to_dict()
    reasons = [f"{name}: {r}" for name, s in steps for r in s.get("reasons") or []]
    invalid = reasons or any(s.get("verdict") != "VALID" for _, s in steps)
    step["verdict"] = "INVALID" if invalid else "VALID"
    step["reasons"] = reasons
    return step, warnings


def _errors(dicts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for d in dicts:
        merged = merge_errors(merged, d)
    return merged


def _overlap(
    intervals: Sequence[Any], names: Sequence[str]
) -> tuple[dict[str, float] | None, list[str]]:
    """How long every worker measured at once, against the span from the first start to the
    last end; None, with a warning, when a worker's result has no wall-clock interval."""
    missing = [n for n, i in zip(names, intervals, strict=True) if not i]
    if missing:
        return None, [
            f"{', '.join(missing)}: no wall-clock interval (a result of an older mserve?): "
            "whether the workers ran at the same time cannot be checked"
        ]
    start, end = max(i[0] for i in intervals), min(i[1] for i in intervals)
    span = max(i[1] for i in intervals) - min(i[0] for i in intervals)
    together = max(0.0, end - start)
    pct = 100.0 * together / span if span > 0 else 100.0
    overlap = {"span_s": round(span, 3), "overlap_s": round(together, 3), "pct": round(pct, 1)}
    if pct >= MIN_OVERLAP_PCT:
        return overlap, []
    return overlap, [
        f"the workers measured together for {together:.1f} s of a {span:.1f} s span "
        f"({pct:.0f}%, under {MIN_OVERLAP_PCT:.0f}%): the summed throughput is more than the "
        "server carried at once; start them together and measure for longer (--duration)"
    ]


def _stable(values: Sequence[Any]) -> bool | None:
    if all(v is None for v in values):
        return None
    return all(v is True for v in values)


def _spread(spreads: Sequence[Any]) -> dict[str, float | None] | None:
    """The widest of the workers' observed spreads (None, unbounded, wins)."""
    if any(not s for s in spreads):
        return None
    out: dict[str, float | None] = {}
    for key in spreads[0]:
        values = [s.get(key) for s in spreads]
        out[key] = None if any(v is None for v in values) else max(values)
    return out


def _upper_bounds(dicts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key by key, the largest value of the dicts that have one."""
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: max(d[k] for d in dicts if k in d) for k in keys}


def _timeline(timelines: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Windows merged by index, over the windows every worker measured: throughputs and errors
    add; p50 and p99 are the largest of the workers' (upper bounds)."""
    common = min(len(t) for t in timelines)
    merged = []
    for k in range(common):
        windows = [t[k] for t in timelines]
        p50 = [w["p50_ms"] for w in windows if w.get("p50_ms") is not None]
        p99 = [w["p99_ms"] for w in windows if w.get("p99_ms") is not None]
        merged.append(
            {
                "t_s": windows[0].get("t_s"),
                "throughput_rps": round(sum(float(w.get("throughput_rps", 0)) for w in windows), 3),
                "p50_ms": max(p50) if p50 else None,
                "p99_ms": max(p99) if p99 else None,
                "errors": sum(int(w.get("errors", 0)) for w in windows),
            }
        )
    return merged


def _generator(steps: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Processes, connections and backlog add; the CPU share is the busiest worker's; the CPU
    time per request is the total over the total."""
    gens = [s.get("generator") or {} for _, s in steps]
    cpu_us = 0.0
    requests = 0
    for (_, s), g in zip(steps, gens, strict=True):
        done = int(s.get("count", 0)) + int(s.get("error_count", 0))
        requests += done
        cpu_us += float(g.get("cpu_us_per_request") or 0.0) * done
    return {
        "workers": sum(int(g.get("workers", 1)) for g in gens),
        "connections": sum(int(g.get("connections", 0)) for g in gens),
        "cpu_percent": max(float(g.get("cpu_percent", 0.0)) for g in gens),
        "cpu_us_per_request": round(cpu_us / requests, 2) if requests else None,
        "backlogged": sum(int(g.get("backlogged", 0)) for g in gens),
    }


def _server(
    steps: Sequence[tuple[str, Mapping[str, Any]]], client_mean_ms: float
) -> dict[str, Any] | None:
    """The first worker's server breakdown (each worker read the same server's counters), the
    network share recomputed against the merged mean latency."""
    for name, s in steps:
        server = s.get("server")
        if server:
            out = dict(server)
            out["network_protocol_ms"] = round(
                max(0.0, client_mean_ms - float(server.get("request_ms", 0.0))), 3
            )
            out["scraped_by"] = name
            return out
    return None
