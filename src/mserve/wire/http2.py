"""HTTP/2 frames, HPACK integers and strings, and gRPC message framing: pure functions of bytes.

Shared by the server's gRPC transport (:mod:`mserve.server.grpc.h2server`) and the load
generator's gRPC client (:mod:`mserve.bench.http2`). They cover the parts of RFC 9113 (HTTP/2),
RFC 7541 (HPACK) and the gRPC wire format that both sides need. Nothing here keeps state.
"""

from __future__ import annotations

import struct
from typing import TypeVar

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

# flags
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

# settings (RFC 9113 6.5.2)
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

# error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

DEFAULT_WINDOW = 65_535  # RFC 9113 6.9.2: every window starts here
DEFAULT_FRAME = 16_384  # the largest frame either side may send until told otherwise
MAX_FRAME = (1 << 24) - 1  # the largest MAX_FRAME_SIZE a peer may announce
MAX_STREAM_ID = (1 << 31) - 1  # also the largest window
FRAME_HEAD = struct.Struct(">BHBBI")  # length (24 bits), type, flags, stream id
SETTING = struct.Struct(">HI")  # one entry of a SETTINGS frame

Payload = TypeVar("Payload", bytes, memoryview)


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    n = len(payload)
    return FRAME_HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream) + payload


def frame_head(ftype: int, flags: int, stream: int, length: int) -> bytes:
    """The 9 bytes in front of a payload of ``length`` bytes."""
    return FRAME_HEAD.pack(length >> 16, length & 0xFFFF, ftype, flags, stream)


def settings_payload(*pairs: tuple[int, int]) -> bytes:
    """The payload of a SETTINGS frame: (identifier, value) pairs."""
    return b"".join(SETTING.pack(ident, value) for ident, value in pairs)


def grpc_message(message: bytes) -> bytes:
    """A serialized protobuf message as gRPC frames it: not compressed, 4-byte length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_prefix(length: int) -> bytes:
    """The 5 bytes gRPC puts in front of a message of ``length`` bytes (not compressed)."""
    return b"\x00" + length.to_bytes(4, "big")


def strip_padding(payload: Payload) -> Payload | None:
    """The payload of a PADDED frame less its pad length and padding; None when the padding
    is longer than the frame (a PROTOCOL_ERROR, RFC 9113 6.1)."""
    if not payload or payload[0] >= len(payload):
        return None
    return payload[1 : len(payload) - payload[0]]


# -- HPACK (RFC 7541): the encodings that need no dynamic table ------------------------------------


def hpack_integer(out: bytearray, value: int, prefix_bits: int, first: int) -> None:
    """Append ``value`` with an N-bit prefix (RFC 7541 5.1); ``first`` holds the high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        out.append(first | value)
        return
    out.append(first | limit)
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def hpack_string(out: bytearray, data: bytes) -> None:
    """Append a string literal, not Huffman-coded (RFC 7541 5.2)."""
    hpack_integer(out, len(data), 7, 0x00)
    out += data


def hpack_literal(out: bytearray, name: bytes | int, value: bytes) -> None:
    """Append a field as a literal that is not indexed (RFC 7541 6.2.2): it leaves the
    peer's dynamic table as it was. ``name`` is a static-table index or the name itself."""
    if isinstance(name, int):
        hpack_integer(out, name, 4, 0x00)
    else:
        out.append(0x00)
        hpack_string(out, name)
    hpack_string(out, value)


def keeps_table(block: bytes) -> bool:
    """True when decoding ``block`` leaves the HPACK dynamic table as it was: it holds only
    indexed fields and literals that are not indexed (RFC 7541 6.1, 6.2.2, 6.2.3). False for
    literals that are indexed, table size updates, and blocks cut short."""
    i, n = 0, len(block)
    try:
        while i < n:
            b = block[i]
            if b & 0x80:  # an indexed field
                i = _read_integer(block, i, 7)[1]
            elif b & 0xC0 == 0x40 or b & 0xE0 == 0x20:  # indexed literal; table size update
                return False
            else:  # a literal that is not indexed, or never indexed
                name_index, i = _read_integer(block, i, 4)
                if name_index == 0:
                    i = _skip_string(block, i)
                i = _skip_string(block, i)
    except IndexError:
        return False
    return i == n


def _read_integer(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value == limit:
        shift = 0
        while True:
            b = block[i]
            i += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
    return value, i


def _skip_string(block: bytes, i: int) -> int:
    length, i = _read_integer(block, i, 7)
    if i + length > len(block):
        raise IndexError(i + length)
    return i + length
