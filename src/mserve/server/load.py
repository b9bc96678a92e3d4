"""How many requests the server holds right now, counted by the transports.

The data plane reads it to decide where a fast model computes: inline on the event loop when
nothing else is waiting (a thread hand-off would cost more than the computation), on the
instance threads when other requests are queued behind this one (the loop goes on parsing and
encoding them while the model computes).
"""

from __future__ import annotations


class InFlight:
    """A counter of requests accepted and not yet answered; touched only on the event loop."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def busy(self) -> bool:
        """True when another request is waiting besides the one asking."""
        return self.count > 1
