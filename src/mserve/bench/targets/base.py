"""The interface every bench target implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mserve.bench.connection import Connect, connect

#: check(status, body) -> None when the response is right, else an error kind ("http_503", ...).
Check = Callable[[int, bytes], str | None]


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the generator sends and how it judges answers: requests are complete wire bytes,
    sent in rotation over connections that ``connect`` opens (HTTP/1.1 unless a target brings
    its own transport, e.g. HTTP/2 for gRPC; it must be a module-level function, so that
    generator processes can receive it)."""

    host: str
    port: int
    requests: list[bytes]
    check: Check
    keep_body: bool = False
    connect: Connect = connect
    rows_per_request: int = 1
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerStats:
    """Cumulative counters of the target's own statistics (all durations in nanoseconds)."""

    requests: int
    inferences: int
    executions: int
    success_ns: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    failures: int = 0


class Target(Protocol):
    """A protocol client: prepares wire requests, judges responses, reads server statistics."""

    protocol: str

    async def prepare(self) -> Prepared:
        """Read what is needed from the server (metadata) and build the requests to send."""
        ...

    async def server_stats(self) -> ServerStats | None:
        """The server's cumulative statistics now, or None when it has none to give."""
        ...


class StatusCheck:
    """Right when the status is the expected one (picklable, for generator processes)."""

    def __init__(self, expected: int = 200) -> None:
        self.expected = expected

    def __call__(self, status: int, body: bytes) -> str | None:
        return None if status == self.expected else f"http_{status}"
