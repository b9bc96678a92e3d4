"""Scoring measured candidates and choosing the winner; the result document.

Pure: each candidate's bench result (steps annotated with ``slo``: met, why, and the objective's
percentile in ``slo_percentile_ms``) goes in, a ranked table and a winner come out. The score is
the best throughput among the steps that meet the SLO, divided by the cores the candidate may
use; a candidate with no such step ranks after every one that has, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mserve.tune.grid import Candidate

SCHEMA = "mserve.tune.result/1"
#: The keys of a bench step kept in the tune document (the full step has histograms).
STEP_KEYS = (
    "load",
    "duration_s",
    "count",
    "error_count",
    "throughput_rps",
    "inferences_per_s",
    "latency_ms",
    "verdict",
    "reasons",
    "slo",
    "slo_percentile_ms",
)


@dataclass(frozen=True, slots=True)
class Scored:
    """One measured candidate: its best load meeting the SLO (if any) and its score."""

    index: int  # position in the grid
    candidate: Candidate
    cores: int
    steps: tuple[dict[str, Any], ...]
    best: dict[str, Any] | None  # the best step meeting the SLO
    error: str = ""  # why it could not be measured at all

    @property
    def meets(self) -> bool:
        return self.best is not None

    @property
    def throughput(self) -> float:
        return float(self.best["throughput_rps"]) if self.best else 0.0

    @property
    def per_core(self) -> float:
        return self.throughput / self.cores if self.best else 0.0

    def verdict(self) -> str:
        """``meets SLO`` or why not."""
        if self.error:
            return f"failed: {self.error}"
        if self.best is not None:
            return "meets SLO"
        if not self.steps:
            return "no step measured"
        first = self.steps[0]
        why = first.get("slo", {}).get("why", "")
        return f"no load meets the SLO (concurrency {_concurrency(first)}: {why})"


def _concurrency(step: dict[str, Any]) -> int:
    return int(step["load"].get("concurrency", 0))


def score(
    index: int, candidate: Candidate, cores: int, steps: list[dict[str, Any]], error: str = ""
) -> Scored:
    """Score one candidate from its annotated steps; ties go to the lower concurrency."""
    met = [s for s in steps if s.get("slo", {}).get("met")]
    best = max(met, key=lambda s: (s["throughput_rps"], -_concurrency(s))) if met else None
    return Scored(index, candidate, cores, tuple(steps), best, error)


def rank(scored: list[Scored]) -> list[Scored]:
    """Best first: SLO-meeting candidates by throughput per core (descending), then the rest;
    equal scores keep the grid's order."""
    return sorted(scored, key=lambda s: (not s.meets, -s.per_core, s.index))


def explain(ranked: list[Scored], objective: str) -> str:
    """Why the first of ``ranked`` wins (or why nothing does)."""
    meeting = [s for s in ranked if s.meets]
    if not meeting:
        return f"no candidate meets {objective} at any load measured"
    win = meeting[0]
    assert win.best is not None  # meeting candidates have a best step
    text = (
        f"{win.candidate.label()} has the highest throughput per core among the "
        f"{len(meeting)} of {len(ranked)} candidates meeting {objective}: "
        f"{win.throughput:.1f} req/s at concurrency {_concurrency(win.best)} on {win.cores} "
        f"core(s) = {win.per_core:.1f} req/s per core"
    )
    if len(meeting) > 1:
        second = meeting[1]
        gain = 100.0 * (win.per_core / second.per_core - 1) if second.per_core else 0.0
        text += (
            f"; next best {second.candidate.label()} at {second.per_core:.1f} "
            f"req/s per core ({gain:+.1f}%)"
        )
    return text


def candidate_entry(s: Scored, rank_: int, config: dict[str, Any]) -> dict[str, Any]:
    """A candidate's entry in the result document."""
    best = None
    if s.best is not None:
        best = {
            "concurrency": _concurrency(s.best),
            "throughput_rps": s.best["throughput_rps"],
            "slo_percentile_ms": s.best.get("slo_percentile_ms"),
        }
    return {
        "index": s.index,
        "rank": rank_,
        "label": s.candidate.label(),
        "candidate": s.candidate.to_dict(),
        "config": config,
        "cores": s.cores,
        "meets_slo": s.meets,
        "best": best,
        "throughput_per_core": round(s.per_core, 3),
        "verdict": s.verdict(),
        "error": s.error or None,
        "steps": [{k: step[k] for k in STEP_KEYS if k in step} for step in s.steps],
    }


def document(
    ranked: list[Scored],
    configs: dict[int, dict[str, Any]],
    header: dict[str, Any],
) -> dict[str, Any]:
    """The ``mserve.tune.result/1`` document: the header (repository, model, SLO, settings),
    every candidate in rank order, the winner's index (None when nothing meets the SLO) and why."""
    winner = ranked[0] if ranked and ranked[0].meets else None
    return {
        "schema": SCHEMA,
        **header,
        "candidates": [candidate_entry(s, i + 1, configs[s.index]) for i, s in enumerate(ranked)],
        "winner": None if winner is None else winner.index,
        "why": explain(ranked, str(header.get("slo", "the SLO"))),
        "applied": None,
    }
