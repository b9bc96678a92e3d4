"""A lean HTTP/1.1 keep-alive client connection for the load generator.

One request at a time per connection, pre-built request bytes, responses parsed by httptools'
C parser. The send and completion times are taken with the monotonic clock in integer
nanoseconds; what to do with them is the caller's business (see :mod:`mserve.bench.generator`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httptools

from mserve.bench.tls import ClientTls

#: on_done(connection, status, body, error_kind): status 0 and an error kind on failure.
OnDone = Callable[["Http1Connection", int, bytes, str | None], None]
#: connect(host, port, on_done, keep_body) -> an open connection. A transport other than
#: HTTP/1.1 provides one returning an object with the same attributes and methods.
Connect = Callable[[str, int, OnDone, bool], Awaitable["Http1Connection"]]


class Http1Connection(asyncio.Protocol):
    """A keep-alive connection that sends one pre-built request at a time."""

    __slots__ = (
        "_body",
        "_keep_body",
        "_on_done",
        "_parser",
        "alive",
        "busy",
        "intended_ns",
        "sent_ns",
        "tag",
        "transport",
    )

    def __init__(self, on_done: OnDone, keep_body: bool = False) -> None:
        self._on_done = on_done
        self._keep_body = keep_body
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self.busy = False
        self.intended_ns = 0
        self.sent_ns = 0
        self.tag: Any = None

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail("protocol")
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.busy:
            self.fail("connection")

    # httptools callbacks ----------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        if self._keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.busy:
            return
        self.busy = False
        status = self._parser.get_status_code()
        body = b""
        if self._keep_body:
            body = b"".join(self._body)
            self._body.clear()
        if not self._parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
            self.alive = False
        self._on_done(self, status, body, None)

    # sending ----------------------------------------------------------------------------------

    def send(self, request: bytes, intended_ns: int, tag: Any = None) -> None:
        """Write one request; ``intended_ns`` is when the schedule wanted it sent."""
        self.busy = True
        self.tag = tag
        self.intended_ns = intended_ns
        self.sent_ns = time.perf_counter_ns()
        assert self.transport is not None  # only idle, connected connections are sent on
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fail(self, kind: str) -> None:
        """End the request in flight with an error kind (timeout, connection, protocol)."""
        if self.busy:
            self.busy = False
            self._body.clear()
            self._on_done(self, 0, b"", kind)


async def connect(
    host: str, port: int, on_done: OnDone, keep_body: bool = False, tls: ClientTls | None = None
) -> Http1Connection:
    """Open one connection (TCP_NODELAY is set by asyncio for TCP transports); with ``tls``,
    over TLS offering ALPN ``http/1.1``, the handshake done before it returns."""
    loop = asyncio.get_running_loop()
    if tls is None:
        _, proto = await loop.create_connection(
            lambda: Http1Connection(on_done, keep_body), host, port
        )
    else:
        _, proto = await loop.create_connection(
            lambda: Http1Connection(on_done, keep_body),
            host,
            port,
            ssl=tls.context("http/1.1"),
            server_hostname=host,
        )
    return proto


@dataclass(frozen=True, slots=True)
class TlsConnect:
    """:func:`connect` over TLS, as a :data:`Connect` that pickles (for generator processes)."""

    tls: ClientTls

    async def __call__(
        self, host: str, port: int, on_done: OnDone, keep_body: bool = False
    ) -> Http1Connection:
        return await connect(host, port, on_done, keep_body, self.tls)


def connector(tls: ClientTls | None) -> Connect:
    """How a target's generator connections open: plain :func:`connect`, or over ``tls``."""
    return connect if tls is None else TlsConnect(tls)


def build_request(
    method: str,
    host: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The complete bytes of one HTTP/1.1 request with keep-alive."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
