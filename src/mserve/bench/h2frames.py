"""HTTP/2 frames, HPACK header blocks and gRPC message framing: pure functions of bytes.

:mod:`mserve.bench.http2` builds its connection on these. They cover the parts of RFC 9113,
RFC 7541 and the gRPC wire format that a unary-call client needs.
"""

from __future__ import annotations

import struct

from mserve.errors import Unavailable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5

DEFAULT_WINDOW = 65_535  # RFC 9113 6.9.2: every window starts here
DEFAULT_FRAME = 16_384  # the largest frame either side may send until told otherwise
#: What this client lets the server send ahead, per stream and per connection: large enough
#: that MB-sized responses flow without waiting for a window update.
RECV_WINDOW = 1 << 24
MAX_STREAM_ID = (1 << 31) - 1
FRAME_HEAD = struct.Struct(">BHBBI")  # length (24 bits), type, flags, stream id


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    n = len(payload)
    return FRAME_HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream) + payload


def grpc_message(message: bytes) -> bytes:
    """A serialized protobuf message as gRPC frames it: not compressed, 4-byte length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_payload(body: bytes) -> bytes:
    """The first message of a response body framed by gRPC (b"" when there is none)."""
    if len(body) < 5:
        return b""
    if body[0] != 0:
        raise Unavailable("the server compressed its answer, which this client never asked for")
    return body[5 : 5 + int.from_bytes(body[1:5], "big")]


def header_block(authority: str, path: str) -> bytes:
    """The HPACK block of a gRPC request. It uses static-table entries and literals that are
    not indexed, so no dynamic table is needed and the block is valid on any connection."""
    out = bytearray(b"\x83\x86")  # static entries 3 and 6: ":method POST", ":scheme http"
    for index, value in ((4, path), (1, authority), (31, "application/grpc")):  # :path ...
        _integer(out, index, 4, 0x00)  # a literal that is not indexed, with an indexed name
        _string(out, value.encode())
    out.append(0x00)  # a literal that is not indexed, with a new name
    _string(out, b"te")
    _string(out, b"trailers")
    _integer(out, 58, 4, 0x00)  # user-agent
    _string(out, b"mserve-bench")
    return bytes(out)


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


def _integer(out: bytearray, value: int, prefix_bits: int, first: int) -> None:
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


def _string(out: bytearray, data: bytes) -> None:
    _integer(out, len(data), 7, 0x00)  # no Huffman coding
    out += data
