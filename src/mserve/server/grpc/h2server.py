"""A lean gRPC server on asyncio: one ``asyncio.Protocol`` per HTTP/2 connection, no framework.

The connection speaks the part of HTTP/2 (RFC 9113) that gRPC clients use:

* the client preface, then a SETTINGS exchange: ours announce MAX_CONCURRENT_STREAMS and a
  16 MiB INITIAL_WINDOW_SIZE (and a WINDOW_UPDATE grows the connection's window to match);
  theirs are acknowledged and applied (INITIAL_WINDOW_SIZE moves the windows of open streams,
  MAX_FRAME_SIZE cuts our DATA; HEADER_TABLE_SIZE needs nothing, since our header blocks never
  use the dynamic table);
* HEADERS with CONTINUATION, padding and the priority flag, decoded by ``hpack`` (blocks that
  leave the dynamic table as it was are decoded once and remembered); DATA with padding;
* many streams at once: each complete unary call runs as its own task on the event loop, a
  streaming call from its HEADERS on, fed message by message (:mod:`.h2streams`);
* flow control both ways: WINDOW_UPDATEs go out once half a window is used, and DATA waits
  for the client's windows;
* PING acknowledged; RST_STREAM from the client cancels that call's task; GOAWAY when the
  client breaks the protocol (PROTOCOL_ERROR and the like, then the connection closes) and at
  shutdown (NO_ERROR: calls in flight finish, bounded by the drain time, new ones are refused).

gRPC itself (message framing, statuses, running a call) is :mod:`.h2calls`. Not served: TLS,
server push, compression, priorities, and ``grpc-timeout``, which is ignored: a call runs until
it is answered or the client resets its stream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import hpack

from mserve.server.grpc.h2streams import (
    MAX_STREAMS,
    WINDOW,
    Authorize,
    Fields,
    Streams,
    Violation,
)
from mserve.server.grpc.service import GrpcService, Method
from mserve.wire.http2 import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_STREAM_ID,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    WINDOW_UPDATE,
    frame,
    keeps_table,
    settings_payload,
    strip_padding,
)

log = logging.getLogger("mserve.grpc")

MAX_HEADER_LIST = 1 << 16  # hpack's default limit, announced
MAX_HEADER_BLOCK = 1 << 18  # bytes of HEADERS + CONTINUATION before the client is told to calm
_KNOWN_BLOCKS = 64  # header blocks remembered per connection


class GrpcConnections:
    """The open connections of one server, for draining at shutdown."""

    def __init__(self) -> None:
        self.open: set[GrpcProtocol] = set()

    async def drain(self, timeout_s: float) -> None:
        """GOAWAY to every connection, let their calls finish (bounded), then close them."""
        for conn in list(self.open):
            conn.go_away()
        deadline = time.monotonic() + timeout_s
        while any(c.busy for c in self.open) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.open):
            conn.close()


class GrpcServer:
    """A listening gRPC port."""

    def __init__(self, listener: asyncio.Server, connections: GrpcConnections) -> None:
        self.listener = listener
        self.connections = connections

    async def stop(self, drain_s: float) -> None:
        """Stop accepting, let calls in flight finish (at most ``drain_s``), close."""
        self.listener.close()
        await self.connections.drain(drain_s)


async def start_grpc(
    service: GrpcService,
    host: str,
    port: int,
    max_message_bytes: int,
    shared: bool = False,
    tls: ssl.SSLContext | None = None,
) -> GrpcServer:
    """Listen on ``host:port`` and serve (OSError when the port is taken); ``shared`` lets the
    workers of one server share the port (SO_REUSEPORT), which is otherwise off so that a port
    in use is an error. Messages longer than ``max_message_bytes`` are RESOURCE_EXHAUSTED.
    With ``tls`` (its ALPN offering h2) the port speaks gRPC over TLS only."""
    methods = service.methods()
    authorize = service.authorize if service.keys is not None else None
    connections = GrpcConnections()
    listener = await asyncio.get_running_loop().create_server(
        lambda: GrpcProtocol(methods, connections, max_message_bytes, authorize),
        host,
        port,
        reuse_port=shared or None,
        backlog=2048,
        ssl=tls,
        ssl_handshake_timeout=10.0 if tls is not None else None,
    )
    return GrpcServer(listener, connections)


class GrpcProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(
        self,
        methods: dict[str, Method],
        connections: GrpcConnections,
        max_message_bytes: int,
        authorize: Authorize | None = None,
    ) -> None:
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.streams = Streams(methods, max_message_bytes, self._write, self._closed, authorize)
        self._decoder = hpack.Decoder()
        self._known: dict[bytes, Fields] = {}
        self._buf = b""
        self._preface = True  # the client preface has not arrived yet
        self._settled = False  # the client's first SETTINGS has not arrived yet
        self._continued: tuple[int, int, list[bytes], int] | None = None
        self._closing = False  # GOAWAY sent: no new streams
        self._recv_window = WINDOW  # what the client may still send on the connection

    @property
    def busy(self) -> bool:
        """True while calls are in flight."""
        return bool(self.streams.open)

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.open.add(self)
        ours = settings_payload(
            (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS),
            (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
        )
        grow = (WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        self._write(frame(SETTINGS, 0, 0, ours) + frame(WINDOW_UPDATE, 0, 0, grow))

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.open.discard(self)
        self.transport = None
        for sid in list(self.streams.open):
            self.streams.drop(sid)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            if self._preface:
                data = self._client_preface(data)
                if self._preface:
                    return
            view = memoryview(data)
            if self._buf:  # complete the frame the last read cut, copying only its bytes
                buf = self._buf
                if len(buf) < 9:
                    missing = 9 - len(buf)
                    buf += view[:missing]
                    view = view[missing:]
                if len(buf) >= 9:
                    missing = 9 + (buf[0] << 16 | buf[1] << 8 | buf[2]) - len(buf)
                    buf += view[:missing]
                    view = view[missing:]
                if self._frames(memoryview(buf)) < len(buf):
                    self._buf = buf  # the data ended first
                    return
            self._buf = bytes(view[self._frames(view) :])
        except Violation as exc:
            self._fail(exc.code, exc.reason)
        except hpack.OversizedHeaderListError as exc:
            self._fail(ENHANCE_YOUR_CALM, str(exc))
        except hpack.HPACKError as exc:
            self._fail(COMPRESSION_ERROR, str(exc))

    def _client_preface(self, data: bytes) -> bytes:
        """What follows the client preface, once all of it came."""
        buf = self._buf + data
        self._buf = b""
        if not buf.startswith(PREFACE[: len(buf)]):
            raise Violation(PROTOCOL_ERROR, "not an HTTP/2 client preface")
        if len(buf) < len(PREFACE):
            self._buf = buf
            return b""
        self._preface = False
        return buf[len(PREFACE) :]

    def _frames(self, buf: memoryview) -> int:
        """Act on every complete frame in ``buf``; the bytes used."""
        pos, size = 0, len(buf)
        while size - pos >= 9 and self.transport is not None:
            hi, lo, ftype, flags, sid = FRAME_HEAD.unpack_from(buf, pos)
            length = hi << 16 | lo
            if length > DEFAULT_FRAME:  # our MAX_FRAME_SIZE: the default
                raise Violation(FRAME_SIZE_ERROR, "frame larger than MAX_FRAME_SIZE")
            end = pos + 9 + length
            if end > size:
                break
            payload = buf[pos + 9 : end]
            pos = end
            sid &= MAX_STREAM_ID
            if self._continued is not None and (ftype != CONTINUATION or sid != self._continued[0]):
                raise Violation(PROTOCOL_ERROR, "a header block was interrupted")
            if not self._settled:
                if ftype != SETTINGS or flags & ACK:
                    raise Violation(PROTOCOL_ERROR, "the preface lacks SETTINGS")
                self._settled = True
            if ftype == DATA:
                self._data(flags, sid, payload)
            elif ftype == HEADERS:
                self._headers(flags, sid, bytes(payload))
            elif ftype == CONTINUATION:
                self._continuation(flags, sid, bytes(payload))
            else:
                self._control(ftype, flags, sid, bytes(payload))
        return pos

    # -- frames ---------------------------------------------------------------------------------

    def _data(self, flags: int, sid: int, payload: memoryview) -> None:
        if sid == 0:
            raise Violation(PROTOCOL_ERROR, "DATA on stream 0")
        self._recv_window -= len(payload)  # padding counts against the windows too
        if self._recv_window < 0:
            raise Violation(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if self._recv_window <= WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, (WINDOW - self._recv_window).to_bytes(4, "big")))
            self._recv_window = WINDOW
        self.streams.data(sid, flags, payload)

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise Violation(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            stripped = strip_padding(payload)
            if stripped is None:
                raise Violation(PROTOCOL_ERROR, "padding longer than the frame")
            payload = stripped
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise Violation(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(sid, flags, payload)
        else:
            self._continued = (sid, flags, [payload], len(payload))

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self._continued is None:
            raise Violation(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        first, first_flags, parts, size = self._continued
        size += len(payload)
        if size > MAX_HEADER_BLOCK:
            raise Violation(ENHANCE_YOUR_CALM, "header block too large")
        parts.append(payload)
        self._continued = (first, first_flags, parts, size)
        if flags & END_HEADERS:
            self._continued = None
            self._header_block(sid, first_flags, b"".join(parts))

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        fields = self._fields(block)  # always decoded: it may change the HPACK table
        self.streams.headers(sid, bool(flags & END_STREAM), fields, refuse=self._closing)

    def _fields(self, block: bytes) -> Fields:
        """What a header block says, decoded with hpack. Most requests repeat a block that only
        names entries of the tables and leaves the dynamic table as it was: its meaning is kept
        for next time. A block that changes the table forgets everything kept."""
        found = self._known.get(block)
        if found is not None:
            return found
        path, post, grpc_type, encoding, authorization, timeout = "", False, False, b"", b"", b""
        for name, value in self._decoder.decode(block, raw=True):
            if name == b":path":
                path = value.decode("latin-1")
            elif name == b":method":
                post = value == b"POST"
            elif name == b"content-type":
                grpc_type = value.startswith(b"application/grpc")
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"authorization":
                authorization = value
            elif name == b"grpc-timeout":
                timeout = value
        found = (path, post and grpc_type, encoding, authorization, timeout)
        if not keeps_table(block):
            self._known.clear()
        elif len(self._known) < _KNOWN_BLOCKS:
            self._known[block] = found
        return found

    def _control(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        n = len(payload)
        if ftype == SETTINGS:
            if sid != 0:
                raise Violation(PROTOCOL_ERROR, "SETTINGS on a stream")
            if n % 6 or (flags & ACK and n):
                raise Violation(FRAME_SIZE_ERROR, "SETTINGS of a wrong length")
            if not flags & ACK:
                self._settings(payload)
        elif ftype == WINDOW_UPDATE:
            if n != 4:
                raise Violation(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong length")
            self.streams.grow(sid, int.from_bytes(payload, "big") & MAX_STREAM_ID)
        elif ftype == PING:
            if n != 8 or sid != 0:
                raise Violation(FRAME_SIZE_ERROR if n != 8 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif ftype == RST_STREAM:
            if n != 4 or sid == 0 or sid > self.streams.last_id:
                raise Violation(PROTOCOL_ERROR, "bad RST_STREAM")
            self.streams.drop(sid)
        elif ftype == GOAWAY:
            if n < 8 or sid != 0:
                raise Violation(PROTOCOL_ERROR, "bad GOAWAY")
            # the client opens no more streams; those open are still answered
        elif ftype == PRIORITY:
            if n != 5:
                raise Violation(FRAME_SIZE_ERROR, "PRIORITY of a wrong length")
        elif ftype == PUSH_PROMISE:
            raise Violation(PROTOCOL_ERROR, "a client cannot push")
        # frames of unknown types are ignored, as RFC 9113 asks

    def _settings(self, payload: bytes) -> None:
        for ident, value in SETTING.iter_unpack(payload):
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_STREAM_ID:
                    raise Violation(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                self.streams.set_initial_window(value)
            elif ident == SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise Violation(PROTOCOL_ERROR, "ENABLE_PUSH is neither 0 nor 1")
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= MAX_FRAME:
                    raise Violation(PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.streams.max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self.streams.flush_blocked()

    # -- writing and closing --------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _closed(self) -> None:
        """A stream closed: after GOAWAY, the last one closes the connection."""
        if self._closing and not self.streams.open:
            self.close()

    def _fail(self, code: int, reason: str) -> None:
        """GOAWAY with an error, and close."""
        log.info("closing a gRPC connection: %s", reason)
        last = self.streams.last_id.to_bytes(4, "big")
        self._write(frame(GOAWAY, 0, 0, last + code.to_bytes(4, "big")))
        self.close()

    def go_away(self) -> None:
        """GOAWAY without error: the calls in flight finish, new ones are refused."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        self._write(frame(GOAWAY, 0, 0, self.streams.last_id.to_bytes(4, "big") + bytes(4)))
        self._closed()

    def close(self) -> None:
        """Close the connection; nothing more is read or written."""
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.close()
