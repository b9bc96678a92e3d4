"""gRPC over HTTP/2 for the load generator: a lean client connection, one unary call at a time.

It has the interface of :class:`mserve.bench.connection.Http1Connection` (``alive``, ``busy``,
``intended_ns``, ``sent_ns``, ``tag``, ``transport``, ``send``, ``close``, ``fail``), so the
generator drives it unchanged. Each ``send`` takes a gRPC message that is already framed
(:func:`grpc_message`) and opens a new stream with the next odd id: one HEADERS frame and the
DATA frames, ending the stream. The answer is complete at the trailers, and its ``grpc-status``
decides the outcome. Status 0 reports 200. Any other code reports the error kind ``grpc_N``.

Only the parts of HTTP/2 (RFC 9113) that such a client needs are here:

* the preface and SETTINGS, with push off and a 16 MiB receive window;
* HEADERS and CONTINUATION, decoded with ``hpack`` (its dynamic table belongs to one connection);
* DATA with flow control both ways: WINDOW_UPDATEs go out once half the window has been used,
  and sending waits for the peer's window;
* PING acks, RST_STREAM (which fails the request) and GOAWAY (the connection is no longer alive).

The request header block never uses the dynamic table: it has static-table entries and
literals that are not indexed. So it is encoded once per connection, and no per-request HPACK
work remains; the user's metadata (``-H``) rides in it. Over TLS (``grpcs://``) the connection
offers ALPN ``h2``. There is no server push and no priority.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import hpack

from mserve.bench.h2frames import RECV_WINDOW, grpc_payload, header_block
from mserve.bench.tls import ClientTls, failure_reason
from mserve.errors import Unavailable
from mserve.wire.http2 import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    GOAWAY,
    HEADERS,
    MAX_STREAM_ID,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    frame,
    grpc_message,
    keeps_table,
    strip_padding,
)

#: on_done(connection, status, body, error_kind): 200 and None when grpc-status is 0.
OnDone = Callable[[Any, int, bytes, str | None], None]
#: what a header block says: (:status, grpc-status, grpc-message), None where absent
Found = tuple[int | None, int | None, str | None]

_CLOSED = "the connection closed before the HTTP/2 handshake (is this the gRPC port?)"


class _Violation(Exception):
    """The peer broke HTTP/2: the connection is closed and the request fails as 'protocol'.
    Private: it never leaves this module."""


class GrpcConnection(asyncio.Protocol):
    """An HTTP/2 connection that makes one gRPC unary call (to one path) at a time."""

    __slots__ = (
        "_block",
        "_body",
        "_buf",
        "_continued",
        "_decoder",
        "_headers_head",
        "_keep_body",
        "_known",
        "_next_id",
        "_on_done",
        "_peer_frame",
        "_peer_window",
        "_pending",
        "_pending_at",
        "_recv_conn",
        "_recv_stream",
        "_send_conn",
        "_send_stream",
        "_status",
        "_stream",
        "_waiter",
        "alive",
        "busy",
        "grpc_message",
        "grpc_status",
        "intended_ns",
        "sent_ns",
        "settled",
        "tag",
        "transport",
    )

    def __init__(
        self,
        on_done: OnDone,
        keep_body: bool,
        authority: str,
        path: str,
        metadata: Sequence[tuple[str, str]] = (),
        scheme: str = "http",
    ) -> None:
        self._on_done = on_done
        self._keep_body = keep_body
        self._block = header_block(authority, path, metadata, scheme)
        if len(self._block) > DEFAULT_FRAME:
            raise ValueError(f"request headers too long for one frame: {authority}{path}")
        self._headers_head = frame(HEADERS, END_HEADERS, 0, self._block)[:5]  # less the id
        self._decoder = hpack.Decoder()
        self._known: dict[bytes, Found] = {}  # header blocks that leave the table unchanged
        self._buf = b""
        self._body: list[bytes] = []
        self._continued: tuple[int, int, list[bytes]] | None = None  # (stream, flags, parts)
        self._next_id = 1
        self._stream = 0  # the stream of the request in flight (or of the last one)
        self._status = 0  # its :status
        self._pending = b""  # request bytes the peer's windows have not let out yet
        self._pending_at = 0
        self._peer_window = DEFAULT_WINDOW  # the initial window of each new stream
        self._peer_frame = DEFAULT_FRAME
        self._send_conn = DEFAULT_WINDOW
        self._send_stream = 0
        self._recv_conn = 0  # bytes received since the last WINDOW_UPDATE, per connection
        self._recv_stream = 0  # the same, for the stream in flight
        self._waiter: asyncio.Future[None] | None = None
        self.settled = False  # the server's SETTINGS arrived
        self.grpc_status: int | None = None
        self.grpc_message = ""
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
        settings = struct.pack(
            ">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, RECV_WINDOW
        )
        grow = (RECV_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        self._write(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grow))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._settle(ConnectionError(_CLOSED))
        if self.busy:
            self.fail("connection")

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        try:
            while size - pos >= 9:
                hi, lo, ftype, flags, stream = FRAME_HEAD.unpack_from(buf, pos)
                length = hi << 16 | lo
                if length > DEFAULT_FRAME or (not self.settled and ftype != SETTINGS):
                    raise _Violation  # also what an HTTP/1.1 answer looks like
                end = pos + 9 + length
                if end > size:
                    break
                payload = buf[pos + 9 : end]
                pos = end
                stream &= MAX_STREAM_ID
                if self._continued is not None and ftype != CONTINUATION:
                    raise _Violation
                if ftype == DATA:
                    self._data(flags, stream, payload)
                elif ftype == HEADERS:
                    self._headers(flags, stream, payload)
                elif ftype == CONTINUATION:
                    self._continuation(flags, stream, payload)
                else:
                    self._control(ftype, flags, stream, payload)
        except (_Violation, hpack.HPACKError):
            self._break()
            return
        self._buf = buf[pos:]

    # frames ------------------------------------------------------------------------------------

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        n = len(payload)
        self._recv_conn += n  # padding counts against the windows too
        if self._recv_conn >= RECV_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, self._recv_conn.to_bytes(4, "big")))
            self._recv_conn = 0
        if stream != self._stream or not self.busy:
            return  # the rest of a stream that already ended here (failed, timed out)
        if flags & PADDED:
            payload = _unpad(payload)
        if self._keep_body:
            self._body.append(payload)
        if flags & END_STREAM:
            self._finish()
            return
        self._recv_stream += n
        if self._recv_stream >= RECV_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, stream, self._recv_stream.to_bytes(4, "big")))
            self._recv_stream = 0

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(stream, flags, payload)
        else:
            self._continued = (stream, flags, [payload])

    def _continuation(self, flags: int, stream: int, payload: bytes) -> None:
        if self._continued is None or self._continued[0] != stream:
            raise _Violation
        self._continued[2].append(payload)
        if flags & END_HEADERS:
            _, first_flags, parts = self._continued
            self._continued = None
            self._header_block(stream, first_flags, b"".join(parts))

    def _header_block(self, stream: int, flags: int, block: bytes) -> None:
        found = self._known.get(block)
        if found is None:
            found = self._decode(block)
        if stream != self._stream or not self.busy:
            return
        status, code, message = found
        if status is not None:
            self._status = status
        if code is not None:
            self.grpc_status = code
        if message is not None:
            self.grpc_message = message
        if flags & END_STREAM:
            self._finish()

    def _decode(self, block: bytes) -> Found:
        """Decode with hpack. Most answers repeat a block that only names entries of the
        tables, which leaves the dynamic table as it was: its meaning is kept for the next
        time. A block that changes the table is always decoded, and it forgets what was kept."""
        status = code = message = None
        for name, value in self._decoder.decode(block, raw=True):
            if name == b":status":
                status = int(value)
            elif name == b"grpc-status":
                code = int(value)
            elif name == b"grpc-message":
                message = unquote(bytes(value).decode("utf-8", "replace"))
        found = (status, code, message)
        if not keeps_table(block):
            self._known.clear()
        elif len(self._known) < 64:
            self._known[block] = found
        return found

    def _control(self, ftype: int, flags: int, stream: int, payload: bytes) -> None:
        if ftype == SETTINGS:
            if stream != 0 or (flags & ACK == 0 and len(payload) % 6):
                raise _Violation
            if not flags & ACK:
                self._settings(payload)
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4 or not (grow := int.from_bytes(payload, "big") & MAX_STREAM_ID):
                raise _Violation
            if stream == 0:
                self._send_conn += grow
            elif stream == self._stream:
                self._send_stream += grow
            if self._pending:
                self._flush()
        elif ftype == PING:
            if len(payload) != 8:
                raise _Violation
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif ftype == RST_STREAM:
            if len(payload) != 4:
                raise _Violation
            if stream == self._stream and self.busy:
                self.fail(f"rst_stream_{int.from_bytes(payload, 'big')}")
        elif ftype == GOAWAY:
            if len(payload) < 8:
                raise _Violation
            last = int.from_bytes(payload[:4], "big") & MAX_STREAM_ID
            self.alive = False
            if self.busy and self._stream > last:
                self.fail("goaway")  # never processed; a fresh connection replaces this one
            if not self.busy:
                self.close()
        elif ftype == PUSH_PROMISE:
            raise _Violation  # push was turned off in our SETTINGS
        # PRIORITY and unknown types are ignored, as RFC 9113 asks

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, i)
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_STREAM_ID:
                    raise _Violation
                self._send_stream += value - self._peer_window  # open streams move too
                self._peer_window = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value < 1 << 24:
                    raise _Violation
                self._peer_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._settle(None)
        if self._pending:
            self._flush()

    # the request --------------------------------------------------------------------------------

    def send(self, request: bytes, intended_ns: int, tag: Any = None) -> None:
        """Start one call carrying ``request`` (a framed gRPC message) on a new stream;
        ``intended_ns`` is when the schedule wanted it sent."""
        self.busy = True
        self.tag = tag
        self.intended_ns = intended_ns
        stream = self._next_id
        self._next_id = stream + 2
        if self._next_id > MAX_STREAM_ID:
            self.alive = False  # the last stream this connection can open
        self._stream = stream
        self._status = 0
        self.grpc_status = None
        self.grpc_message = ""
        self._recv_stream = 0
        window = self._peer_window
        n = len(request)
        headers = self._headers_head + stream.to_bytes(4, "big") + self._block
        self.sent_ns = time.perf_counter_ns()
        assert self.transport is not None  # only idle, connected connections are sent on
        if n <= self._peer_frame and n <= window and n <= self._send_conn:
            self._send_conn -= n
            self._send_stream = window - n
            head = FRAME_HEAD.pack(n >> 16, n & 0xFFFF, DATA, END_STREAM, stream)
            self.transport.writelines((headers, head, request))
        else:
            self._send_stream = window
            self.transport.write(headers)
            self._pending = request
            self._pending_at = 0
            self._flush()

    def _flush(self) -> None:
        """Send as much of the pending request as the peer's windows allow."""
        data, at = self._pending, self._pending_at
        total = len(data)
        while at < total:
            room = min(total - at, self._peer_frame, self._send_conn, self._send_stream)
            if room <= 0:
                break
            end = at + room
            self._write(frame(DATA, END_STREAM if end == total else 0, self._stream, data[at:end]))
            self._send_conn -= room
            self._send_stream -= room
            at = end
        if at >= total:
            self._pending, self._pending_at = b"", 0
        else:
            self._pending_at = at

    def _finish(self) -> None:
        self.busy = False
        body = b""
        if self._keep_body:
            body = b"".join(self._body)
            self._body.clear()
        if not self.alive:
            self.close()
        code = self.grpc_status
        if code == 0:
            self._on_done(self, 200, body, None)
        elif code is not None:
            self._on_done(self, 0, body, f"grpc_{code}")
        elif self._status != 200:
            self._on_done(self, 0, body, f"http_{self._status}")
        else:
            self._on_done(self, 0, body, "grpc_no_status")

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _settle(self, error: Exception | None) -> None:
        self.settled = self.settled or error is None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _break(self) -> None:
        self.alive = False
        self._settle(ConnectionError("the peer does not speak HTTP/2 (is this the gRPC port?)"))
        self.fail("protocol")
        self.close()

    # the generator's interface -----------------------------------------------------------------

    async def handshake(self) -> None:
        """Wait for the server's SETTINGS (ConnectionError when it never speaks HTTP/2)."""
        if self.settled:
            return
        if not self.alive:
            raise ConnectionError(_CLOSED)
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fail(self, kind: str) -> None:
        """End the request in flight with an error kind (timeout, connection, protocol)."""
        if self.busy:
            self.busy = False
            self._body.clear()
            self._pending, self._pending_at = b"", 0
            self._on_done(self, 0, b"", kind)


def _unpad(payload: bytes) -> bytes:
    stripped = strip_padding(payload)
    if stripped is None:
        raise _Violation
    return stripped


async def connect(
    host: str,
    port: int,
    on_done: OnDone,
    keep_body: bool = False,
    path: str = "/",
    timeout: float = 10.0,
    metadata: Sequence[tuple[str, str]] = (),
    tls: ClientTls | None = None,
) -> GrpcConnection:
    """Open one connection for calls to ``path``, each carrying ``metadata``, and wait for the
    HTTP/2 handshake (OSError, ssl.SSLError, ConnectionError or TimeoutError when it fails).
    With ``tls`` the TLS handshake comes first, offering ALPN ``h2``."""
    loop = asyncio.get_running_loop()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    scheme = "http" if tls is None else "https"

    def factory() -> GrpcConnection:
        return GrpcConnection(on_done, keep_body, authority, path, metadata, scheme)

    if tls is None:
        transport, proto = await loop.create_connection(factory, host, port)
    else:
        transport, proto = await asyncio.wait_for(
            loop.create_connection(
                factory, host, port, ssl=tls.context("h2"), server_hostname=host
            ),
            timeout,
        )
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if chosen not in (None, "h2"):
            transport.close()
            raise ConnectionError(f"the server chose {chosen} over TLS, not HTTP/2 (ALPN h2)")
    try:
        await asyncio.wait_for(proto.handshake(), timeout)
    except BaseException:
        proto.close()
        raise
    return proto


async def unary(
    host: str,
    port: int,
    path: str,
    message: bytes,
    timeout: float = 10.0,
    metadata: Sequence[tuple[str, str]] = (),
    tls: ClientTls | None = None,
) -> tuple[int, str, bytes]:
    """One unary call on a fresh connection (the control plane, never the hot path), with
    ``metadata``, over ``tls`` when given.

    Returns (grpc status code, grpc message, serialized response message); Unavailable when
    the server cannot be reached or gives no gRPC answer."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[tuple[str | None, bytes]] = loop.create_future()

    def on_done(conn: Any, status: int, body: bytes, error: str | None) -> None:
        if not answered.done():
            answered.set_result((error, body))

    where = f"{'grpc' if tls is None else 'grpcs'}://{host}:{port}{path}"
    try:
        conn = await connect(host, port, on_done, True, path, timeout, metadata, tls)
    except TimeoutError:
        raise Unavailable(f"cannot connect to {where}: timed out after {timeout} s") from None
    except OSError as exc:  # ConnectionError and ssl.SSLError included
        raise Unavailable(f"cannot connect to {where}: {failure_reason(exc)}") from None
    try:
        conn.send(grpc_message(message), time.perf_counter_ns())
        async with asyncio.timeout(timeout):
            error, body = await answered
    except TimeoutError:
        raise Unavailable(f"{where}: no answer within {timeout} s") from None
    finally:
        conn.close()
    if conn.grpc_status is None:
        raise Unavailable(f"{where}: no gRPC answer ({error})")
    return conn.grpc_status, conn.grpc_message, grpc_payload(body) if error is None else b""
