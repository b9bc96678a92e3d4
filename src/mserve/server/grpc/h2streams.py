"""The streams of one HTTP/2 connection: each carries one gRPC call, from the HEADERS that open
it to the trailers that end it.

:class:`Streams` opens a stream for a request's header block (or refuses it with one header
block: not gRPC, unknown method, an encoding other than identity), feeds it the DATA that
arrives (with the stream's receive window), starts a unary call once the request ended and a
streaming call at once, and cancels a call whose stream the client resets.

It is also the :class:`mserve.server.grpc.h2calls.Sink` of the connection: an answer goes in by
stream id (a stream reset meanwhile is not written) and leaves as HEADERS (``:status 200``,
``content-type: application/grpc``), DATA cut to the client's MAX_FRAME_SIZE, and trailers with
END_STREAM. DATA that the client's windows (the connection's and the stream's) do not allow yet
waits on its stream; WINDOW_UPDATE and SETTINGS release it, in the order the streams blocked. A
small unary answer is one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mserve.server.grpc.h2calls import (
    INTERNAL,
    INVALID_ARGUMENT,
    OK_TRAILERS,
    RESPONSE_HEAD,
    UNIMPLEMENTED,
    CallError,
    MessageReader,
    run_streaming,
    run_unary,
    trailers,
)
from mserve.server.grpc.service import Method, Streaming, Unary
from mserve.wire.http2 import (
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    MAX_STREAM_ID,
    NO_ERROR,
    PADDED,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    frame_head,
    grpc_prefix,
    hpack_literal,
    strip_padding,
)

WINDOW = 1 << 24  # what a client may send ahead, per stream and per connection
MAX_STREAMS = 1024  # open streams per connection

#: (path, POST with a gRPC content-type, grpc-encoding, authorization, grpc-timeout) of a
#: request's header block
Fields = tuple[str, bool, bytes, bytes, bytes]

#: Decides whether a call may start: (path, authorization) -> None, or the (code, message) that
#: refuses it
Authorize = Callable[[str, bytes], "tuple[int, str] | None"]

_TIMEOUT_UNITS = {b"H": 3600 * 10**9, b"M": 60 * 10**9, b"S": 10**9, b"m": 10**6, b"u": 1000}
_TIMEOUT_UNITS[b"n"] = 1


def timeout_ns(value: bytes) -> int | None:
    """gRPC's ``grpc-timeout`` (at most 8 digits and a unit, e.g. ``100m``) in nanoseconds;
    None when it is not of that form."""
    digits, unit = value[:-1], value[-1:]
    scale = _TIMEOUT_UNITS.get(unit)
    if scale is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * scale


def _not_grpc() -> bytes:
    out = bytearray()
    hpack_literal(out, 8, b"415")  # the name of static entry 8: ":status"
    return bytes(out)


_NOT_GRPC = _not_grpc()  # the HTTP answer to a request that is not gRPC


class Violation(Exception):
    """The client broke HTTP/2: the connection answers GOAWAY with ``code`` and closes."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Stream:
    """One call's stream: what arrived, what waits to be sent."""

    __slots__ = (
        "deadline_ns",
        "ended",
        "head_sent",
        "id",
        "method",
        "pending",
        "reader",
        "recv_window",
        "requests",
        "send_window",
        "tail",
        "task",
    )

    def __init__(self, sid: int, method: Method, reader: MessageReader, window: int) -> None:
        self.id = sid
        self.method = method
        self.reader = reader
        self.send_window = window
        self.recv_window = WINDOW
        self.ended = False  # the client's END_STREAM arrived
        self.head_sent = False
        self.pending = b""  # framed messages the client's windows have not let out yet
        self.tail = b""  # the closing HEADERS frame, once the call is over
        self.requests: asyncio.Queue[object] | None = None  # streaming calls only
        self.task: asyncio.Task[None] | None = None
        self.deadline_ns = 0  # from grpc-timeout, on the perf_counter_ns clock; 0: none


class Streams:
    """The open streams of a connection, what arrives on them and what leaves."""

    def __init__(
        self,
        methods: dict[str, Method],
        limit: int,
        write: Callable[[bytes], None],
        on_closed: Callable[[], None],
        authorize: Authorize | None = None,
    ) -> None:
        """``write`` sends bytes (or drops them once the connection is closed); ``on_closed``
        is told each time a stream closes; ``limit`` is the largest message, either way;
        ``authorize`` admits or refuses each call by its path and credentials."""
        self.methods = methods
        self.authorize = authorize
        self.limit = limit
        self.open: dict[int, Stream] = {}
        self.last_id = 0  # the highest stream id the client opened
        self.window = DEFAULT_WINDOW  # the connection's window for what we send
        self.initial_window = DEFAULT_WINDOW  # the client's INITIAL_WINDOW_SIZE
        self.max_frame = DEFAULT_FRAME  # the client's MAX_FRAME_SIZE
        self._write = write
        self._on_closed = on_closed
        self._blocked: dict[int, Stream] = {}  # streams whose DATA waits for a window

    # -- what arrives ----------------------------------------------------------------------------

    def headers(self, sid: int, ended: bool, fields: Fields, refuse: bool) -> None:
        """A complete header block; ``refuse`` new streams (the server is going away)."""
        s = self.open.get(sid)
        if s is not None:  # trailers of the request
            if s.ended or not ended:
                self.reset(s, PROTOCOL_ERROR)
            else:
                self._end(s)
            return
        if sid <= self.last_id:
            return  # late headers of a stream answered or reset already
        if sid % 2 == 0:
            raise Violation(PROTOCOL_ERROR, "a client opened an even stream")
        self.last_id = sid
        if refuse or len(self.open) >= MAX_STREAMS:
            self._write(frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        path, is_grpc, encoding, authorization, timeout = fields
        method = self.methods.get(path)
        refused = None if self.authorize is None else self.authorize(path, authorization)
        wait_ns = timeout_ns(timeout) if timeout else 0
        if not is_grpc:
            self._refuse(sid, ended, _NOT_GRPC)
        elif method is None:
            self._refuse(sid, ended, trailers(UNIMPLEMENTED, f"unknown method {path}", True))
        elif refused is not None:
            self._refuse(sid, ended, trailers(*refused, only=True))
        elif encoding not in (b"", b"identity"):
            problem = f"grpc-encoding {encoding.decode('latin-1')} is not supported; send identity"
            self._refuse(sid, ended, trailers(UNIMPLEMENTED, problem, True))
        elif wait_ns is None:
            problem = f"grpc-timeout {timeout.decode('latin-1')!r} is not of the form 100m"
            self._refuse(sid, ended, trailers(INVALID_ARGUMENT, problem, True))
        else:
            s = self.open[sid] = Stream(sid, method, MessageReader(self.limit), self.initial_window)
            if wait_ns:
                s.deadline_ns = time.perf_counter_ns() + wait_ns
            if isinstance(method, Streaming):
                s.requests = asyncio.Queue()
                call = run_streaming(self, sid, method, s.requests, self.limit, s.deadline_ns)
                s.task = asyncio.get_running_loop().create_task(call)
            if ended:
                self._end(s)

    def data(self, sid: int, flags: int, payload: memoryview) -> None:
        """A DATA frame (the connection's window already counted it)."""
        s = self.open.get(sid)
        if s is None:
            if sid > self.last_id:
                raise Violation(PROTOCOL_ERROR, "DATA on a stream never opened")
            return  # a stream answered or reset already: the rest of its request is dropped
        if s.ended:
            self.reset(s, STREAM_CLOSED)
            return
        n = len(payload)  # padding counts against the windows too
        if flags & PADDED:
            stripped = strip_padding(payload)
            if stripped is None:
                raise Violation(PROTOCOL_ERROR, "padding longer than the frame")
            payload = stripped
        s.recv_window -= n
        if s.recv_window < 0:
            self.reset(s, FLOW_CONTROL_ERROR)
            return
        ended = s.ended = bool(flags & END_STREAM)
        if not ended and s.recv_window <= WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, sid, (WINDOW - s.recv_window).to_bytes(4, "big")))
            s.recv_window = WINDOW
        if payload:
            try:
                s.reader.feed(payload)
                if s.requests is not None and s.reader.messages:
                    for message in s.reader.messages:
                        s.requests.put_nowait(_parse(s.method, message))
                    s.reader.messages.clear()
                elif len(s.reader.messages) > 1:
                    raise CallError(INTERNAL, "a unary call takes one request message, not more")
            except CallError as exc:
                self._fail(s, exc.code, exc.message)
                return
        if ended:
            self._end(s)

    def _end(self, s: Stream) -> None:
        """The client's END_STREAM: a unary call starts, a streaming one's requests end."""
        s.ended = True
        if s.reader.partial:
            self._fail(s, INTERNAL, "the request ended inside a message")
        elif s.requests is not None:
            s.requests.put_nowait(None)
        elif len(s.reader.messages) != 1 or not isinstance(s.method, Unary):
            got = len(s.reader.messages)
            self._fail(s, INTERNAL, f"a unary call takes one request message, not {got}")
        else:
            message = s.reader.messages.pop()
            call = run_unary(self, s.id, s.method, message, self.limit, s.deadline_ns)
            s.task = asyncio.get_running_loop().create_task(call)

    def _fail(self, s: Stream, code: int, message: str) -> None:
        if s.task is not None:
            s.task.cancel()
        self.finish(s.id, code, message)

    def _refuse(self, sid: int, ended: bool, block: bytes) -> None:
        """Answer a stream that is never opened with one header block."""
        out = frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
        if not ended:  # the client may stop sending (RFC 9113 8.1)
            out += frame(RST_STREAM, 0, sid, NO_ERROR.to_bytes(4, "big"))
        self._write(out)

    # -- the client's flow control ---------------------------------------------------------------

    def set_initial_window(self, value: int) -> None:
        """The client's new INITIAL_WINDOW_SIZE; open streams move too (RFC 9113 6.9.2).
        What it lets out is sent by the next :meth:`flush_blocked`."""
        delta = value - self.initial_window
        self.initial_window = value
        for s in self.open.values():
            s.send_window += delta

    def grow(self, sid: int, n: int) -> None:
        """A WINDOW_UPDATE of ``n`` for a stream (0: the connection)."""
        if sid == 0:
            self.window += n
            if n == 0 or self.window > MAX_STREAM_ID:
                raise Violation(FLOW_CONTROL_ERROR if n else PROTOCOL_ERROR, "bad WINDOW_UPDATE")
            self.flush_blocked()
            return
        s = self.open.get(sid)
        if s is None:
            return
        s.send_window += n
        if n == 0 or s.send_window > MAX_STREAM_ID:
            self.reset(s, FLOW_CONTROL_ERROR if n else PROTOCOL_ERROR)
        elif s.pending:
            self._flush(s, [])

    def flush_blocked(self) -> None:
        """Send what the windows now let out."""
        for s in list(self._blocked.values()):
            if self.window <= 0:
                break
            self._flush(s, [])

    # -- the Sink of h2calls ---------------------------------------------------------------------

    def answer(self, stream: int, message: bytes) -> None:
        """Head, message and OK trailers, in one write when the windows let them."""
        s = self.open.get(stream)
        if s is None:
            return
        n = len(message) + 5
        if n <= self.max_frame and n <= self.window and n <= s.send_window:
            self.window -= n
            head = frame_head(HEADERS, END_HEADERS, stream, len(RESPONSE_HEAD))
            tail = frame_head(HEADERS, END_HEADERS | END_STREAM, stream, len(OK_TRAILERS))
            data = frame_head(DATA, 0, stream, n) + grpc_prefix(n - 5)
            self._write(b"".join((head, RESPONSE_HEAD, data, message, tail, OK_TRAILERS)))
            self._done(s)
            return
        s.pending += grpc_prefix(n - 5) + message
        s.tail = frame(HEADERS, END_HEADERS | END_STREAM, stream, OK_TRAILERS)
        self._flush(s, [])

    def send_message(self, stream: int, message: bytes) -> None:
        """One more message of a streamed answer."""
        s = self.open.get(stream)
        if s is not None:
            s.pending += grpc_prefix(len(message)) + message
            self._flush(s, [])

    def finish(self, stream: int, code: int, message: str) -> None:
        """End the call with this status: trailers after what is pending, or trailers only."""
        s = self.open.get(stream)
        if s is None:
            return
        if not s.head_sent:
            s.head_sent = True
            block = trailers(code, message, only=True)
            self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream, block))
            self._done(s)
            return
        s.tail = frame(HEADERS, END_HEADERS | END_STREAM, stream, trailers(code, message))
        self._flush(s, [])

    # -- closing streams -------------------------------------------------------------------------

    def reset(self, s: Stream, code: int) -> None:
        """RST_STREAM with ``code``; the call is cancelled."""
        self.drop(s.id)
        self._write(frame(RST_STREAM, 0, s.id, code.to_bytes(4, "big")))

    def drop(self, sid: int) -> None:
        """Forget a stream (the client reset it, or the connection is gone); its call is
        cancelled."""
        s = self.open.pop(sid, None)
        if s is None:
            return
        self._blocked.pop(sid, None)
        if s.task is not None:
            s.task.cancel()
        self._on_closed()

    def _done(self, s: Stream) -> None:
        """The answer is out: the stream is closed on our side."""
        self.open.pop(s.id, None)
        self._blocked.pop(s.id, None)
        if not s.ended:  # answered before the whole request came: stop its sending
            self._write(frame(RST_STREAM, 0, s.id, NO_ERROR.to_bytes(4, "big")))
        self._on_closed()

    def _flush(self, s: Stream, out: list[bytes]) -> None:
        """Write the stream's head, as much of its pending DATA as the windows let out, and its
        tail once nothing is pending."""
        if not s.head_sent:
            s.head_sent = True
            out.append(frame(HEADERS, END_HEADERS, s.id, RESPONSE_HEAD))
        data, at, total = s.pending, 0, len(s.pending)
        while at < total:
            room = min(total - at, self.max_frame, self.window, s.send_window)
            if room <= 0:
                break
            out.append(frame_head(DATA, 0, s.id, room))
            out.append(data[at : at + room])
            self.window -= room
            s.send_window -= room
            at += room
        s.pending = data[at:] if at else data
        if s.pending:
            self._blocked[s.id] = s
        else:
            self._blocked.pop(s.id, None)
            if s.tail:
                out.append(s.tail)
        if out:
            self._write(b"".join(out))
        if s.tail and not s.pending:
            self._done(s)


def _parse(method: Method, message: bytes) -> object:
    try:
        return method.parse(message)
    except Exception:  # protobuf's DecodeError, or anything its parser raises
        raise CallError(INTERNAL, "a request message cannot be parsed") from None
