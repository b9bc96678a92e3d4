"""The load generator's own parts of gRPC over HTTP/2: its request header block, its receive
window, and reading the message of an answer.

What the server's transport shares (frames, HPACK integers and strings, gRPC message framing)
lives in :mod:`mserve.wire.http2`; the names of it that the bench's tests and targets use are
re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    PRIORITY,
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
    hpack_literal,
    keeps_table,
)

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "DEFAULT_FRAME",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "FRAME_HEAD",
    "GOAWAY",
    "HEADERS",
    "MAX_STREAM_ID",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RECV_WINDOW",
    "RST_STREAM",
    "SETTINGS",
    "SETTINGS_ENABLE_PUSH",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "SETTINGS_MAX_FRAME_SIZE",
    "WINDOW_UPDATE",
    "frame",
    "grpc_message",
    "grpc_payload",
    "header_block",
    "keeps_table",
]

#: What this client lets the server send ahead, per stream and per connection: large enough
#: that MB-sized responses flow without waiting for a window update.
RECV_WINDOW = 1 << 24


def grpc_payload(body: bytes) -> bytes:
    """The first message of a response body framed by gRPC (b"" when there is none)."""
    if len(body) < 5:
        return b""
    if body[0] != 0:
        raise Unavailable("the server compressed its answer, which this client never asked for")
    return body[5 : 5 + int.from_bytes(body[1:5], "big")]


def header_block(
    authority: str,
    path: str,
    metadata: Sequence[tuple[str, str]] = (),
    scheme: str = "http",
) -> bytes:
    """The HPACK block of a gRPC request, with ``metadata`` (lower-case names) after the
    bench's own fields; ``scheme`` is https over TLS. It uses static-table entries and literals
    that are not indexed, so no dynamic table is needed and the block is valid on any
    connection."""
    out = bytearray(b"\x83")  # static entry 3: ":method POST"
    out.append(0x87 if scheme == "https" else 0x86)  # static 7 / 6: ":scheme https" / "http"
    for index, value in ((4, path), (1, authority), (31, "application/grpc")):  # :path ...
        hpack_literal(out, index, value.encode())
    hpack_literal(out, b"te", b"trailers")
    if all(name != "user-agent" for name, _ in metadata):
        hpack_literal(out, 58, b"mserve-bench")  # user-agent
    for name, value in metadata:
        hpack_literal(out, name.encode("ascii"), value.encode("latin-1"))
    return bytes(out)
