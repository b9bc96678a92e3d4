"""When a batch leaves the queue and how many requests it takes: pure decisions, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mserve.config import ModelConfig


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A model's batching limits, validated by the config loader; durations in nanoseconds."""

    max_batch_size: int
    max_queue_delay_ns: int = 0
    preferred: tuple[int, ...] = ()  # ascending
    max_queue_size: int = 0  # 0: unbounded
    timeout_ns: int = 0  # 0: none

    @classmethod
    def from_config(cls, config: ModelConfig) -> BatchPolicy | None:
        """The policy of a model with a ``dynamic_batching`` section, else None."""
        db = config.dynamic_batching
        if db is None or config.max_batch_size < 1:
            return None
        return cls(
            max_batch_size=config.max_batch_size,
            max_queue_delay_ns=db.max_queue_delay_us * 1000,
            preferred=tuple(sorted(db.preferred_batch_sizes)),
            max_queue_size=db.max_queue_size,
            timeout_ns=db.default_timeout_us * 1000,
        )

    def full(self, rows: int) -> int | None:
        """The batch size to send at once when ``rows`` are waiting: ``max_batch_size`` when
        that many are there, else the largest preferred size reached; None when neither is."""
        if rows >= self.max_batch_size:
            return self.max_batch_size
        reached = [p for p in self.preferred if p <= rows]
        return reached[-1] if reached else None

    def should_wait(self, waited_ns: int, more_coming: bool) -> int:
        """Nanoseconds to hold a batch that is not full yet for more rows (0: send it now).

        A batch waits only while requests that could join it are on their way (``more_coming``)
        and its oldest request has waited less than ``max_queue_delay``: a lone client is never
        held back, and no request waits longer than the delay for company.
        """
        if not more_coming or waited_ns >= self.max_queue_delay_ns:
            return 0
        return self.max_queue_delay_ns - waited_ns


def take(rows: Iterable[int], limit: int) -> int:
    """How many leading requests (of ``rows`` rows each, in arrival order) fit in ``limit``
    rows; always at least one, so a request is never starved by its own size."""
    total = 0
    n = 0
    for r in rows:
        if n and total + r > limit:
            break
        total += r
        n += 1
    return n
