"""A lean HTTP/1.1 server protocol on httptools' C parser.

One ``asyncio.Protocol`` per connection: keep-alive, pipelined requests answered in order,
``Expect: 100-continue``, a body-size limit enforced while the body arrives (413 before it is
read), and one ``write`` per response (head and body together). Complete requests go to
:class:`mserve.server.http.app.HttpApp`; nothing here knows about models.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import deque
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from mserve.errors import (
    HeadersTooLarge,
    InvalidRequest,
    MalformedRequest,
    PayloadTooLarge,
    TooManyConnections,
)
from mserve.server.http.app import HttpApp, Reply, Request, error_reply
from mserve.server.load import InFlight

log = logging.getLogger("mserve.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_PIPELINE = 32  # queued requests per connection before reading pauses
_SERVER = b"server: mserve\r\n"
_QUIET_S = 0.2  # at shutdown, idle connections close once all have been quiet this long


class _Date:
    """The Date header, formatted once per second."""

    second = 0
    value = b""

    @classmethod
    def header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.value


def render(reply: Reply, keep_alive: bool, head_only: bool = False) -> bytes:
    """The bytes of one response."""
    status, body, headers = reply
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown")),
        _SERVER,
        _Date.header(),
        b"content-length: %d\r\n" % len(body),
    ]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


class Connections:
    """The open connections of one server: limits, idle time-outs, and draining at shutdown.

    ``accepted`` counts requests read whole, ``answered`` the responses written, and
    ``abandoned`` the requests whose connection closed before their answer (the client's doing,
    or the server's: a refused request, or the drain's time limit); at the end of a drain
    ``accepted == answered + abandoned``.
    """

    def __init__(
        self,
        keep_alive_s: float = 75.0,
        in_flight: InFlight | None = None,
        max_connections: int = 0,
        max_header_bytes: int = 16 * 1024,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.open: set[HttpServerProtocol] = set()
        self.in_flight = in_flight or InFlight()
        self.keep_alive_s = keep_alive_s
        self.max_connections = max_connections  # 0: no limit
        self.max_header_bytes = max_header_bytes
        self.read_timeout_s = read_timeout_s  # longest a request may take to arrive
        self.closing = False
        self.accepted = 0
        self.answered = 0
        self.abandoned = 0

    def close_idle(self) -> None:
        """Close connections idle for longer than the keep-alive time, and answer 408 to
        requests that have taken longer than the read time-out to arrive."""
        now = time.monotonic()
        limit = now - self.keep_alive_s
        for conn in list(self.open):
            if conn.idle and conn.last_active < limit:
                conn.close()
            elif conn.receiving and conn.receiving_since < now - self.read_timeout_s:
                conn.read_timed_out()

    async def drain(self, timeout_s: float) -> None:
        """Answer every request in flight and any that still arrives on an open connection
        (each with ``connection: close``), bounded by ``timeout_s``; close connections once
        all have been quiet for a moment, then every connection."""
        self.closing = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            quiet_since = time.monotonic() - _QUIET_S
            if all(c.idle and c.last_active < quiet_since for c in self.open):
                break
            await asyncio.sleep(0.01)
        for conn in list(self.open):
            conn.close()


class HttpServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: HttpApp, connections: Connections) -> None:
        self.app = app
        self.connections = connections
        self.limit = app.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self.last_active = time.monotonic()
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._rejected = False
        self.receiving = False  # a request has begun to arrive and has not ended
        self.receiving_since = 0.0

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.receiving

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        conns = self.connections
        if conns.max_connections and len(conns.open) >= conns.max_connections:
            reply = error_reply(TooManyConnections(conns.max_connections))
            transport.write(render(reply, keep_alive=False))  # type: ignore[attr-defined]
            transport.close()
            return
        self.transport = transport  # type: ignore[assignment]
        conns.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        conns = self.connections
        conns.open.discard(self)
        self.transport = None
        unanswered = len(self.queue) + (1 if self.busy else 0)
        conns.abandoned += unanswered
        conns.in_flight.count -= len(self.queue)  # never to be answered
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # refused (too many connections) or closed
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(MalformedRequest("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self._rejected:
                self._reject(MalformedRequest(f"malformed HTTP request: {exc}"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._head_size = 0
        self.receiving = True
        self.receiving_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def _count_head(self, n: int) -> None:
        self._head_size += n
        limit = self.connections.max_header_bytes
        if self._head_size > limit and not self._rejected:
            self._reject(HeadersTooLarge(self._head_size, limit))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        if self._rejected:
            return
        key = name.lower()
        old = self._headers.get(key)
        self._headers[key] = value if old is None else old + b", " + value

    def on_headers_complete(self) -> None:
        declared = self._headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            self._reject(PayloadTooLarge(int(declared), self.limit))
            return
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._size += len(body)
        if self._size > self.limit:
            self._reject(PayloadTooLarge(self._size, self.limit))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        if self._rejected:
            return
        url = self._url
        q = url.find(b"?")
        raw_path = url if q < 0 else url[:q]
        path = raw_path.decode("latin-1") if b"%" not in raw_path else unquote(raw_path.decode())
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        query = "" if q < 0 else url[q + 1 :].decode("latin-1")
        request = Request(self.parser.get_method().decode(), path, self._headers, body, query)
        self.queue.append((request, self.parser.should_keep_alive()))
        self.connections.accepted += 1
        self.connections.in_flight.count += 1
        if len(self.queue) > _MAX_PIPELINE and self.transport is not None:
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    # -- answering ------------------------------------------------------------------------------

    def _next(self) -> None:
        request, keep_alive = self.queue.popleft()
        self.busy = True
        asyncio.get_running_loop().create_task(self._answer(request, keep_alive))

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            reply = await self.app.handle(request)
        finally:
            self.connections.in_flight.count -= 1
        transport = self.transport
        if transport is None or transport.is_closing():  # nothing to write to any more
            if transport is not None:  # else connection_lost counted it already
                self.connections.abandoned += 1
            self.busy = False
            return
        keep_alive = keep_alive and not self.connections.closing
        transport.write(render(reply, keep_alive, request.method == "HEAD"))
        self.connections.answered += 1
        self.busy = False
        self.last_active = time.monotonic()
        if not keep_alive:
            transport.close()
            return
        if self.queue:
            self._next()
            if len(self.queue) <= _MAX_PIPELINE // 2:
                transport.resume_reading()

    def _reject(self, error: InvalidRequest) -> None:
        """Answer an unreadable or oversized request at once and close the connection."""
        self._rejected = True
        self.receiving = False
        self.connections.in_flight.count -= len(self.queue)
        self.connections.abandoned += len(self.queue)
        self.queue.clear()
        if self.transport is not None:
            self.transport.write(render(error_reply(error), keep_alive=False))
            self.transport.close()

    def read_timed_out(self) -> None:
        """A request that takes too long to arrive (a stalled or malicious client): 408."""
        self.receiving = False
        if self.transport is not None and not self._rejected:
            self._rejected = True
            seconds = self.connections.read_timeout_s
            doc = b'{"error":"the request did not arrive whole within %g s"}' % seconds
            self.transport.write(
                render((408, doc, [(b"content-type", b"application/json")]), keep_alive=False)
            )
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
