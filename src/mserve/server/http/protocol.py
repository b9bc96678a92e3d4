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

from mserve.errors import MalformedRequest, PayloadTooLarge
from mserve.server.http.app import HttpApp, Reply, Request, error_reply
from mserve.server.load import InFlight

log = logging.getLogger("mserve.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_MAX_PIPELINE = 32  # queued requests per connection before reading pauses
_SERVER = b"server: mserve\r\n"


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
    """The open connections of one server, for idle time-outs and draining at shutdown."""

    def __init__(self, keep_alive_s: float = 75.0, in_flight: InFlight | None = None) -> None:
        self.open: set[HttpServerProtocol] = set()
        self.in_flight = in_flight or InFlight()
        self.keep_alive_s = keep_alive_s
        self.closing = False

    def close_idle(self) -> None:
        """Close connections idle for longer than the keep-alive time."""
        limit = time.monotonic() - self.keep_alive_s
        for conn in list(self.open):
            if conn.idle and conn.last_active < limit:
                conn.close()

    async def drain(self, timeout_s: float) -> None:
        """Let in-flight requests finish (bounded), then close every connection."""
        self.closing = True
        deadline = time.monotonic() + timeout_s
        while any(not c.idle for c in self.open) and time.monotonic() < deadline:
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
        self._rejected = False

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.open.discard(self)
        self.transport = None
        self.connections.in_flight.count -= len(self.queue)  # never to be answered
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
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

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
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
        if transport is None:  # the client went away; nothing to write to
            self.busy = False
            return
        keep_alive = keep_alive and not self.connections.closing
        transport.write(render(reply, keep_alive, request.method == "HEAD"))
        self.busy = False
        self.last_active = time.monotonic()
        if not keep_alive:
            transport.close()
            return
        if self.queue:
            self._next()
            if len(self.queue) <= _MAX_PIPELINE // 2:
                transport.resume_reading()

    def _reject(self, error: MalformedRequest | PayloadTooLarge) -> None:
        """Answer an unreadable or oversized request at once and close the connection."""
        self._rejected = True
        self.connections.in_flight.count -= len(self.queue)
        self.queue.clear()
        if self.transport is not None:
            self.transport.write(render(error_reply(error), keep_alive=False))
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
