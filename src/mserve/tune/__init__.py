"""``mserve tune``: measure a grid of configs of one model under the same load and pick the one
with the highest throughput per core that meets a latency SLO.

    grid.py   the candidates and their config.yaml (pure)
    score.py  scoring, ranking, the winner and the result document (pure)
    run.py    temporary repositories, ``mserve serve`` subprocesses, mserve bench (the shell)
"""

from __future__ import annotations

from mserve.tune.grid import Candidate, Grid
from mserve.tune.run import TuneOptions, tune
from mserve.tune.score import SCHEMA

__all__ = ["SCHEMA", "Candidate", "Grid", "TuneOptions", "tune"]
