"""The shell of ``mserve tune``: for each candidate, a temporary repository holding just that
model, ``mserve serve`` on a free port, the same load from mserve bench, then the server stopped.

The grid, the scoring and the choice live in :mod:`mserve.tune.grid` and
:mod:`mserve.tune.score`; this module only runs things and hands their figures over.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve.bench.generator import Load
from mserve.bench.result import Settings, new_result
from mserve.bench.runner import run_step
from mserve.bench.slo import Slo, percentile_ms
from mserve.bench.slo import search as slo_search
from mserve.bench.targets import make_target
from mserve.config import CONFIG_FILE, ModelConfig, model_config_to_dict, write_model_config
from mserve.errors import ModelNotFound, RepositoryError
from mserve.repository import Repository
from mserve.tune.grid import Candidate, Grid, cores, expand, render, resolve_variant, variant_names
from mserve.tune.score import Scored, document, rank, score

#: progress(line): one line per event (candidate started, step measured, candidate done).
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TuneOptions:
    """How candidates are measured. ``concurrency`` empty: the SLO search (the highest
    closed-loop concurrency meeting the SLO, from 1, doubling then bisecting, capped at
    ``max_concurrency``); else a fixed sweep with the SLO applied to each step."""

    slo: Slo
    concurrency: tuple[int, ...] = ()
    duration_s: float = 2.0
    warmup_s: float = 0.5
    max_concurrency: int = 64
    max_candidates: int = 12
    protocol: str = "v2-binary"

    def check(self) -> None:
        """Raise ValueError naming the option that is out of range."""
        if any(c < 1 for c in self.concurrency):
            raise ValueError(f"--concurrency values must be >= 1; got {list(self.concurrency)}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be positive and --warmup at least 0")
        if self.max_concurrency < 1 or self.max_candidates < 1:
            raise ValueError("--max-concurrency and --max-candidates must be at least 1")
        if self.protocol not in ("v2-binary", "v2-json"):
            raise ValueError(f"--protocol must be v2-binary or v2-json; got {self.protocol!r}")


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def variants(repository: Repository, name: str, requested: tuple[str, ...] | None) -> list[str]:
    """The models to try: NAME and its variants present (``requested`` None), or the requested
    ones, each of which must exist."""
    present = set(repository.names())
    if name not in present:
        raise ModelNotFound(name, known=sorted(present))
    if requested is None:
        return list(variant_names(name, present))
    chosen = [resolve_variant(name, entry) for entry in requested]
    for model in chosen:
        if model not in present:
            raise ModelNotFound(model, known=sorted(present))
    return chosen


def base_config(repository: Repository, model: str) -> ModelConfig:
    """The model's config as its folder has it (read from the model when it has no file)."""
    source = repository.source(model)
    if source.error is not None:
        raise RepositoryError(str(source.path), source.error)
    return source.config or ModelConfig(model)


def plan(grid: Grid, options: TuneOptions) -> list[Candidate]:
    """The candidates to measure; raises when the grid is larger than ``max_candidates``."""
    options.check()
    candidates = expand(grid)
    if len(candidates) > options.max_candidates:
        raise ValueError(
            f"the grid has {len(candidates)} candidates ({len(grid.variants)} model(s) x "
            f"{len(candidates) // len(grid.variants)} configs), more than --max-candidates "
            f"{options.max_candidates}; list fewer values or raise --max-candidates"
        )
    return candidates


def tune(
    repository: Path,
    name: str,
    options: TuneOptions,
    *,
    batch_sizes: tuple[int, ...] = (0, 16),
    delays_us: tuple[int, ...] = (1000,),
    instances: tuple[int, ...] = (1,),
    threads: tuple[int, ...] = (0,),
    variant_list: tuple[str, ...] | None = None,
    apply: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure every candidate config of model ``name`` in ``repository`` under the same load
    and return the ``mserve.tune.result/1`` document (``winner`` is None when no candidate meets
    the SLO). With ``apply`` the winning config is written to the winner's config.yaml.

    Raises ValueError for bad options or a grid over ``max_candidates``, ModelNotFound for an
    unknown model or variant, RepositoryError for a repository or model folder that cannot be
    read."""
    say = progress or (lambda _: None)
    repo = Repository(repository)
    models = variants(repo, name, variant_list)
    grid = Grid(tuple(models), batch_sizes, delays_us, instances, threads)
    candidates = plan(grid, options)
    bases = {model: base_config(repo, model) for model in models}
    usable = available_cores()
    configs: dict[int, dict[str, Any]] = {}
    scored: list[Scored] = []
    for index, candidate in enumerate(candidates):
        config = render(bases[candidate.model], candidate)
        configs[index] = model_config_to_dict(config)
        say(f"[{index + 1}/{len(candidates)}] {candidate.label()}")
        steps, error = measure(repo.root / candidate.model, config, options, say)
        scored.append(score(index, candidate, cores(candidate, usable), steps, error))
        say(f"  -> {scored[-1].verdict()}, {scored[-1].per_core:.1f} req/s per core")
    ranked = rank(scored)
    header = {
        "repository": str(repository),
        "model": name,
        "slo": str(options.slo),
        "mode": "sweep" if options.concurrency else "search",
        "concurrency": list(options.concurrency) or None,
        "max_concurrency": options.max_concurrency,
        "settings": _settings(options).to_dict(),
        "protocol": options.protocol,
        "cores_available": usable,
        "grid": {
            "variants": list(grid.variants),
            "batch_sizes": list(grid.batch_sizes),
            "delays_us": list(grid.delays_us),
            "instances": list(grid.instances),
            "threads": list(grid.threads),
        },
    }
    doc = document(ranked, configs, header)
    if apply and ranked and ranked[0].meets:
        win = ranked[0]
        path = repo.root / win.candidate.model / CONFIG_FILE
        write_model_config(path, render(bases[win.candidate.model], win.candidate))
        doc["applied"] = str(path)
    return doc


def _settings(options: TuneOptions) -> Settings:
    return Settings(
        warmup_s=options.warmup_s,
        window_s=min(1.0, options.duration_s),
        duration_s=options.duration_s,
        timeout_s=10.0,
    )


def measure(
    folder: Path, config: ModelConfig, options: TuneOptions, say: Progress
) -> tuple[list[dict[str, Any]], str]:
    """Serve ``config`` (with the version folders of ``folder``) alone from a temporary
    repository and run the load; returns the annotated steps, or the error that stopped it."""
    from mserve.server.process import ServerProcess

    with tempfile.TemporaryDirectory(prefix="mserve-tune-") as tmp:
        root = Path(tmp)
        target_folder = root / config.name
        target_folder.mkdir()
        for version in folder.iterdir():
            if version.is_dir() and version.name.isdigit():
                shutil.copytree(version, target_folder / version.name)
        write_model_config(target_folder / CONFIG_FILE, config)
        server = ServerProcess(root, host="127.0.0.1")
        try:
            server.start(timeout=60)
            return asyncio.run(_bench(server.url, config.name, options, say)), ""
        # a candidate that cannot start or be measured ranks last with the reason; the others
        # still run (the server's own error text is the most useful thing to report)
        except Exception as exc:
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            why = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else repr(exc)
            return [], why[:400]
        finally:
            server.stop()


async def _bench(url: str, model: str, options: TuneOptions, say: Progress) -> list[dict[str, Any]]:
    target = make_target(options.protocol, url, model=model)
    prepared = await target.prepare()
    settings = _settings(options)
    result = new_result(prepared.description, settings, ["tune"])
    slo = options.slo

    async def step(load: Load) -> dict[str, Any]:
        summary = await run_step(target, prepared, load, settings)
        summary["slo_percentile_ms"] = (
            round(percentile_ms(summary, slo.percentile), 3) if summary["count"] else None
        )
        result["steps"].append(summary)
        return summary

    def tell(summary: dict[str, Any]) -> None:
        ok = summary["slo"]["met"]
        say(
            f"  concurrency {summary['load']['concurrency']}: "
            f"{summary['throughput_rps']:.1f} req/s, {summary['slo']['why']} "
            f"{'meets' if ok else 'misses'} {slo}"
        )

    if options.concurrency:
        for level in options.concurrency:
            summary = await step(Load("closed", concurrency=level))
            met, why = slo.met_by(summary)
            summary["slo"] = {"objective": str(slo), "met": met, "why": why}
            tell(summary)
    else:

        async def probe(load: Load) -> dict[str, Any]:
            summary = await step(load)
            met, why = slo.met_by(summary)  # search() annotates the same way after we return
            tell({**summary, "slo": {"met": met, "why": why}})
            return summary

        start = Load("closed", concurrency=1)
        await slo_search(probe, start, slo, max_concurrency=options.max_concurrency)
    return list(result["steps"])
