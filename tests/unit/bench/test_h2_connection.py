"""The bench's gRPC-over-HTTP/2 connection and its framing, fed frames built here: no sockets,
no server."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import hpack
import pytest

from mserve.bench import h2frames
from mserve.bench.h2frames import (
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
    grpc_message,
    grpc_payload,
    header_block,
    keeps_table,
)
from mserve.bench.http2 import GrpcConnection
from mserve.bench.targets.v2grpc import parse_url

PATH = "/inference.GRPCInferenceService/ModelInfer"
END_STREAM, END_HEADERS, PADDED, ACK = 0x1, 0x4, 0x8, 0x1
Frame = tuple[int, int, int, bytes]  # type, flags, stream, payload


class FakeTransport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: Any) -> None:
        for p in parts:
            self.out += p

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[Frame]:
        """Every frame written since the last call (the client preface skipped)."""
        data = bytes(self.out)
        self.out.clear()
        if data.startswith(h2frames.PREFACE):
            data = data[len(h2frames.PREFACE) :]
        return parse(data)


def parse(data: bytes) -> list[Frame]:
    out = []
    while data:
        hi, lo, ftype, flags, stream = struct.unpack_from(">BHBBI", data)
        end = 9 + (hi << 16 | lo)
        out.append((ftype, flags, stream, data[9:end]))
        data = data[end:]
    return out


class Server:
    """The server's side of the frames: its own HPACK encoder, as a real server keeps."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(self, stream: int, pairs: list[tuple[str, str]], end: bool = False) -> bytes:
        flags = END_HEADERS | (END_STREAM if end else 0)
        return frame(HEADERS, flags, stream, self.encoder.encode(pairs))

    def answer(self, stream: int, message: bytes, status: str = "0") -> bytes:
        return (
            self.headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
            + frame(DATA, 0, stream, grpc_message(message))
            + self.headers(stream, [("grpc-status", status), ("grpc-message", "")], end=True)
        )


def settings(**values: int) -> bytes:
    ids = {"initial_window": 0x4, "max_frame": 0x5, "max_streams": 0x3}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def open_connection(
    keep_body: bool = True, **server_settings: int
) -> tuple[GrpcConnection, FakeTransport, list[tuple[int, bytes, str | None]]]:
    done: list[tuple[int, bytes, str | None]] = []
    conn = GrpcConnection(
        lambda c, status, body, err: done.append((status, body, err)),
        keep_body,
        "127.0.0.1:8001",
        PATH,
    )
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(settings(**server_settings))
    return conn, transport, done


def test_the_request_header_block_decodes_to_a_grpc_call() -> None:
    block = header_block("example:8001", PATH)
    assert hpack.Decoder().decode(block) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", "example:8001"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "mserve-bench"),
    ]
    # no dynamic table: the same block decodes the same on one connection, again and again
    decoder = hpack.Decoder()
    assert decoder.decode(block) == decoder.decode(block)
    long_path = "/" + "p" * 300  # lengths past the 7-bit prefix
    assert hpack.Decoder().decode(header_block("h:1", long_path))[2] == (":path", long_path)


def test_grpc_framing_round_trips() -> None:
    assert grpc_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert grpc_payload(grpc_message(b"abc")) == b"abc"
    assert grpc_payload(b"") == b""


def test_the_preface_offers_a_large_window_and_no_push() -> None:
    conn, transport, _ = open_connection()
    written = bytes(transport.out)
    assert written.startswith(h2frames.PREFACE)
    first, grow, ack = transport.frames()
    assert first[:3] == (SETTINGS, 0, 0)
    assert dict(struct.iter_unpack(">HI", first[3])) == {0x2: 0, 0x4: h2frames.RECV_WINDOW}
    assert grow[:3] == (WINDOW_UPDATE, 0, 0)
    assert int.from_bytes(grow[3], "big") == h2frames.RECV_WINDOW - 65_535
    assert ack == (SETTINGS, ACK, 0, b"")  # the server's SETTINGS acknowledged
    assert conn.settled
    assert conn.alive


def test_a_call_is_headers_and_data_on_a_new_odd_stream() -> None:
    conn, transport, done = open_connection()
    transport.frames()
    server = Server()
    request = grpc_message(b"request")
    for stream in (1, 3, 5):
        conn.send(request, 123, tag="t")
        assert conn.busy
        assert conn.intended_ns == 123
        assert conn.sent_ns > 0
        headers, data = transport.frames()
        assert headers == (HEADERS, END_HEADERS, stream, header_block("127.0.0.1:8001", PATH))
        assert data == (DATA, END_STREAM, stream, request)
        conn.data_received(server.answer(stream, b"answer"))
        assert not conn.busy
        assert done.pop() == (200, grpc_message(b"answer"), None)
    assert transport.frames() == []  # small answers need no window update


def test_an_answer_split_into_single_bytes_is_the_same() -> None:
    conn, _, done = open_connection()
    conn.send(grpc_message(b"x"), 0)
    for byte in Server().answer(1, b"answer"):
        conn.data_received(bytes([byte]))
    assert done == [(200, grpc_message(b"answer"), None)]


def test_a_grpc_error_is_its_code_as_error_kind() -> None:
    conn, _, done = open_connection(keep_body=False)
    conn.send(grpc_message(b"x"), 0)
    # trailers only: one HEADERS frame ending the stream, as servers answer errors
    pairs = [(":status", "200"), ("grpc-status", "3"), ("grpc-message", "bad%20shape")]
    conn.data_received(Server().headers(1, pairs, end=True))
    assert done == [(0, b"", "grpc_3")]
    assert conn.grpc_status == 3
    assert conn.grpc_message == "bad shape"
    assert conn.alive


def test_http_errors_and_missing_status() -> None:
    conn, _, done = open_connection(keep_body=False)
    server = Server()
    conn.send(grpc_message(b"x"), 0)
    conn.data_received(server.headers(1, [(":status", "503")], end=True))
    conn.send(grpc_message(b"x"), 0)
    conn.data_received(server.headers(3, [(":status", "200")]) + frame(DATA, END_STREAM, 3))
    assert [kind for _, _, kind in done] == ["http_503", "grpc_no_status"]


def test_headers_continue_padded_data_and_stale_streams_are_handled() -> None:
    conn, _, done = open_connection()
    server = Server()
    conn.send(grpc_message(b"x"), 0)
    block = server.encoder.encode([(":status", "200")])
    padded = b"\x03" + grpc_message(b"ok") + b"\x00\x00\x00"
    trailers = server.encoder.encode([("grpc-status", "0")])
    conn.data_received(
        frame(HEADERS, 0, 1, block[:1])
        + frame(CONTINUATION, END_HEADERS, 1, block[1:])
        + frame(DATA, PADDED, 1, padded)
        + frame(HEADERS, END_STREAM, 1, trailers[:1])
        + frame(CONTINUATION, END_HEADERS, 1, trailers[1:])
    )
    assert done == [(200, grpc_message(b"ok"), None)]
    # a frame of a stream that already ended is dropped, but its headers still feed HPACK
    conn.data_received(server.headers(1, [("late", "header")]) + frame(DATA, 0, 1, b"late"))
    conn.send(grpc_message(b"x"), 0)
    conn.data_received(server.answer(3, b"fine"))
    assert done[-1] == (200, grpc_message(b"fine"), None)


def test_received_data_is_acknowledged_with_window_updates() -> None:
    conn, transport, done = open_connection(keep_body=False)
    transport.frames()
    conn.send(grpc_message(b"x"), 0)
    transport.frames()
    server = Server()
    chunk = b"\x00" * 16_384
    half = h2frames.RECV_WINDOW // 2
    conn.data_received(server.headers(1, [(":status", "200")]))
    conn.data_received(b"".join(frame(DATA, 0, 1, chunk) for _ in range(half // len(chunk))))
    updates = [(s, int.from_bytes(p, "big")) for t, _, s, p in transport.frames()]
    assert sorted(updates) == [(0, half), (1, half)]  # connection and stream, once half is used
    conn.data_received(server.headers(1, [("grpc-status", "0")], end=True))
    assert done == [(200, b"", None)]


def test_sending_waits_for_the_servers_window() -> None:
    conn, transport, done = open_connection(initial_window=10)
    transport.frames()
    request = grpc_message(b"y" * 20)  # 25 bytes
    conn.send(request, 0)
    headers, data = transport.frames()
    assert headers[0] == HEADERS
    assert data == (DATA, 0, 1, request[:10])
    conn.data_received(frame(WINDOW_UPDATE, 0, 1, (10).to_bytes(4, "big")))
    assert transport.frames() == [(DATA, 0, 1, request[10:20])]
    # a larger initial window also grows the open stream's window (RFC 9113 6.9.2)
    conn.data_received(settings(initial_window=100))
    ack, rest = transport.frames()
    assert ack == (SETTINGS, ACK, 0, b"")
    assert rest == (DATA, END_STREAM, 1, request[20:])
    conn.data_received(Server().answer(1, b""))
    assert done == [(200, grpc_message(b""), None)]


def test_requests_larger_than_a_frame_are_split() -> None:
    conn, transport, _ = open_connection(initial_window=1 << 20)
    transport.frames()
    request = grpc_message(b"z" * 40_000)
    conn.send(request, 0)
    _, *data = transport.frames()
    assert [len(p) for _, _, _, p in data] == [16_384, 16_384, 7_237]
    assert [flags for _, flags, _, _ in data] == [0, 0, END_STREAM]
    assert b"".join(p for _, _, _, p in data) == request


def test_pings_are_acknowledged() -> None:
    conn, transport, _ = open_connection()
    transport.frames()
    conn.data_received(frame(PING, 0, 0, b"12345678") + frame(PING, ACK, 0, b"87654321"))
    assert transport.frames() == [(PING, ACK, 0, b"12345678")]


def test_a_reset_stream_fails_the_request_only() -> None:
    conn, _, done = open_connection()
    conn.send(grpc_message(b"x"), 0)
    conn.data_received(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))  # CANCEL
    assert done == [(0, b"", "rst_stream_8")]
    assert conn.alive
    assert not conn.busy


def test_goaway_ends_the_connection() -> None:
    conn, transport, done = open_connection()
    conn.send(grpc_message(b"x"), 0)
    # streams up to 1 will still be answered: the request in flight completes, then it closes
    conn.data_received(frame(GOAWAY, 0, 0, (1).to_bytes(4, "big") + bytes(4)))
    assert not conn.alive
    assert conn.busy
    assert not transport.closed
    conn.data_received(Server().answer(1, b"last"))
    assert done == [(200, grpc_message(b"last"), None)]
    assert transport.closed
    # a stream past the last one the server will process fails at once
    conn2, transport2, done2 = open_connection()
    conn2.send(grpc_message(b"x"), 0)
    conn2.data_received(frame(GOAWAY, 0, 0, bytes(8)))
    assert done2 == [(0, b"", "goaway")]
    assert transport2.closed


def test_a_lost_connection_fails_the_request() -> None:
    conn, _, done = open_connection()
    conn.send(grpc_message(b"x"), 0)
    conn.connection_lost(None)
    assert done == [(0, b"", "connection")]
    assert not conn.alive


def test_an_http1_server_is_a_protocol_error() -> None:
    async def handshake() -> None:
        conn = GrpcConnection(lambda *a: None, False, "h:1", PATH)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        waiting = asyncio.ensure_future(conn.handshake())
        await asyncio.sleep(0)
        conn.data_received(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        assert transport.closed
        assert not conn.alive
        await waiting

    with pytest.raises(ConnectionError, match="does not speak HTTP/2"):
        asyncio.run(handshake())


def test_a_corrupt_header_block_is_a_protocol_error() -> None:
    conn, transport, done = open_connection()
    conn.send(grpc_message(b"x"), 0)
    conn.data_received(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"))  # no such index
    assert done == [(0, b"", "protocol")]
    assert transport.closed


def test_blocks_that_keep_the_table_are_told_apart() -> None:
    assert keeps_table(b"\x88\xc0\xbf")  # indexed fields only
    assert keeps_table(b"\xbe\x00\x0cgrpc-message\x00")  # and a literal, not indexed
    assert keeps_table(header_block("h:1", "/" + "p" * 300))
    assert not keeps_table(b"\x40\x02te\x08trailers")  # a literal added to the table
    assert not keeps_table(b"\x3f\xe1\x1f")  # a table size update
    assert not keeps_table(b"\x04\x05ab")  # cut short
    assert not keeps_table(b"\xff")


def test_a_repeated_block_follows_the_changes_of_the_table() -> None:
    conn, _, done = open_connection(keep_body=False)

    def trailers_only(stream: int, block: bytes) -> None:
        conn.send(grpc_message(b"x"), 0)
        conn.data_received(frame(HEADERS, END_HEADERS | END_STREAM, stream, b"\x88" + block))

    status = b"\x0bgrpc-status"
    newest = b"\xbe"  # the newest entry of the dynamic table (index 62)
    trailers_only(1, b"\x40" + status + b"\x010")  # adds grpc-status: 0
    trailers_only(3, newest)
    trailers_only(5, newest)  # the same bytes, the same meaning
    trailers_only(7, b"\x40" + status + b"\x013")  # adds grpc-status: 3 in front
    trailers_only(9, newest)  # the same bytes now mean grpc-status: 3
    trailers_only(11, b"\xbf")  # and the older entry moved to index 63
    assert [kind for _, _, kind in done] == [None, None, None, "grpc_3", "grpc_3", None]


def test_grpc_addresses_are_host_and_port() -> None:
    assert parse_url("grpc://10.0.0.2:9001") == ("10.0.0.2", 9001)
    assert parse_url("localhost:9001") == ("localhost", 9001)
    assert parse_url("grpc://localhost") == ("localhost", 8001)  # Triton's gRPC port
    with pytest.raises(ValueError, match=r"give grpc://h:PORT"):
        parse_url("http://h:8000")
    with pytest.raises(ValueError, match="has no path"):
        parse_url("grpc://h:1/v2")
