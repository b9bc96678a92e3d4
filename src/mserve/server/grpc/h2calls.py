"""gRPC calls on HTTP/2 streams: message framing, status trailers, and running one call.

The streams of an HTTP/2 connection (:mod:`mserve.server.grpc.h2streams`) hand each call's
messages here and take back what it answers through a :class:`Sink`, addressed by stream id. A
call whose stream was reset meanwhile is cancelled, and nothing more is written for it.

Messages use gRPC's length-prefixed framing: a flag byte (1: compressed) and a 4-byte length.
Only identity encoding is served; a compressed message is UNIMPLEMENTED. A message longer than
the server's limit is RESOURCE_EXHAUSTED, worded as grpcio words it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

from mserve.server.grpc.service import CALL_DEADLINE, Streaming, Unary, status_of
from mserve.server.grpc.status import Code
from mserve.wire.http2 import hpack_literal

# the gRPC status codes the transport itself answers with
OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = (
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.RESOURCE_EXHAUSTED,
    Code.UNIMPLEMENTED,
    Code.INTERNAL,
)

_CONTENT_TYPE = 31  # static-table index of content-type (RFC 7541 appendix A)
MAX_STATUS_MESSAGE = 4096  # bytes of grpc-message, percent-encoded; the rest is cut


def _response_head() -> bytes:
    out = bytearray(b"\x88")  # static entry 8: ":status 200"
    hpack_literal(out, _CONTENT_TYPE, b"application/grpc")
    return bytes(out)


#: The header block in front of every answer. Every block the server sends is made of static
#: entries and literals that are not indexed, so it never touches the client's dynamic table,
#: whatever HEADER_TABLE_SIZE the client announced, and can be built once.
RESPONSE_HEAD = _response_head()
_UNSAFE = re.compile(rb"[^\x20-\x24\x26-\x7e]")  # what grpc-message percent-encodes


def percent_encode(message: str) -> bytes:
    """grpc-message as the gRPC spec writes it: UTF-8, every byte outside printable ASCII and
    every '%' as %XX; at most MAX_STATUS_MESSAGE bytes (a long message is cut, and says so)."""
    while True:
        raw = message.encode()
        encoded = (
            _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], raw) if _UNSAFE.search(raw) else raw
        )
        if len(encoded) <= MAX_STATUS_MESSAGE:
            return encoded
        message = message[: len(message) * 3 // 4 - 3].rstrip() + "..."


def trailers(code: int, message: str = "", only: bool = False) -> bytes:
    """The header block that ends a call; ``only`` for a trailers-only answer (no message was
    sent, so it carries the response head too). It fits one frame of any peer."""
    out = bytearray(RESPONSE_HEAD if only else b"")
    hpack_literal(out, b"grpc-status", str(code).encode())
    if message:
        hpack_literal(out, b"grpc-message", percent_encode(message))
    return bytes(out)


OK_TRAILERS = trailers(OK)


class CallError(Exception):
    """The call ends with this status; raised where its messages are read. Private to the
    gRPC transport."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MessageReader:
    """The gRPC messages in the DATA of one stream, however the frames cut them. Each message
    is copied once, out of the frames that carried it."""

    __slots__ = ("_body", "_left", "_prefix", "limit", "messages")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages: list[bytes] = []  # complete messages not yet taken
        self._prefix = b""  # the 5-byte prefix of the message being read, or the start of it
        self._body: list[memoryview] = []  # what arrived of its contents
        self._left = 0  # bytes of its contents still to come

    @property
    def partial(self) -> bool:
        """True while a message has begun but not ended."""
        return bool(self._prefix)

    def feed(self, data: bytes | memoryview) -> None:
        """Add the payload of a DATA frame; CallError for a message the server will not read."""
        if len(data) < self._left:  # inside a message: most frames of a large one
            self._body.append(memoryview(data))
            self._left -= len(data)
            return
        view = memoryview(data)
        while view:
            if len(self._prefix) < 5:
                need = 5 - len(self._prefix)
                self._prefix += view[:need]
                view = view[need:]
                if len(self._prefix) < 5:
                    return
                self._left = self._check(self._prefix)
            take = min(self._left, len(view))
            if take:
                self._body.append(view[:take])
                view = view[take:]
                self._left -= take
            if not self._left:
                body = self._body
                self.messages.append(body[0].tobytes() if len(body) == 1 else b"".join(body))
                self._body = []
                self._prefix = b""

    def _check(self, prefix: bytes) -> int:
        if prefix[0]:
            raise CallError(UNIMPLEMENTED, "compressed messages are not supported; send identity")
        length = int.from_bytes(prefix[1:5], "big")
        if length > self.limit:
            raise CallError(
                RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {self.limit})"
            )
        return length


class Sink(Protocol):
    """Where a call's answer goes: the HTTP/2 connection, by stream id."""

    def answer(self, stream: int, message: bytes) -> None:
        """The one message of a unary answer, and OK."""

    def send_message(self, stream: int, message: bytes) -> None:
        """One more message of a streamed answer."""

    def finish(self, stream: int, code: int, message: str) -> None:
        """End the call with this status."""


async def run_unary(
    sink: Sink, stream: int, method: Unary, payload: bytes, limit: int, deadline_ns: int = 0
) -> None:
    """Parse, call, answer; every outcome ends the stream (unless it was reset: cancelled).
    The handler finds the call's deadline (grpc-timeout) in :data:`CALL_DEADLINE`."""
    CALL_DEADLINE.set(deadline_ns)  # this task's own context
    try:
        request = method.parse(payload)
    except Exception:  # protobuf's DecodeError, or anything its parser raises
        sink.finish(stream, INTERNAL, "the request message cannot be parsed")
        return
    try:
        data = method.serialize(await method.call(request))
    except Exception as exc:
        sink.finish(stream, *status_of(exc))
        return
    if len(data) > limit:
        sink.finish(stream, RESOURCE_EXHAUSTED, _too_large(len(data), limit))
        return
    sink.answer(stream, data)


async def run_streaming(
    sink: Sink,
    stream: int,
    method: Streaming,
    requests: asyncio.Queue[Any],
    limit: int,
    deadline_ns: int = 0,
) -> None:
    """Feed the handler the requests as they arrive (None on ``requests`` ends them) and send
    each answer as it comes. The handler is closed however the call ends."""
    CALL_DEADLINE.set(deadline_ns)
    try:
        async with contextlib.aclosing(method.call(_drain(requests))) as answers:
            async for answer in answers:
                data = method.serialize(answer)
                if len(data) > limit:
                    sink.finish(stream, RESOURCE_EXHAUSTED, _too_large(len(data), limit))
                    return
                sink.send_message(stream, data)
    except Exception as exc:
        sink.finish(stream, *status_of(exc))
        return
    sink.finish(stream, OK, "")


def _too_large(size: int, limit: int) -> str:
    return f"Sent message larger than max ({size} vs. {limit})"


async def _drain(requests: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while (request := await requests.get()) is not None:
        yield request
