"""The server's gRPC-over-HTTP/2 transport, fed frames built here: no sockets, no models.

Each test plays the client: it writes the preface, SETTINGS, HEADERS and DATA that a gRPC
client would, through a fake transport, and reads back the frames the server wrote."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

import hpack
import pytest

from mserve.errors import NotFound
from mserve.server.grpc.h2calls import MessageReader, percent_encode
from mserve.server.grpc.h2server import GrpcConnections, GrpcProtocol
from mserve.server.grpc.h2streams import MAX_STREAMS, WINDOW
from mserve.server.grpc.service import Method, Streaming, Unary
from mserve.wire import inference_pb2 as pb
from mserve.wire.http2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)

Frame = tuple[int, int, int, bytes]  # type, flags, stream, payload
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 0, 1, 7, 8
GRPC_INTERNAL, GRPC_NOT_FOUND, GRPC_EXHAUSTED, GRPC_UNIMPLEMENTED = 13, 5, 8, 12


class FakeTransport:
    """Collects what the server writes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[Frame]:
        """Every frame written since the last call."""
        data = bytes(self.out)
        self.out.clear()
        found = []
        while data:
            hi, lo, ftype, flags, stream = struct.unpack_from(">BHBBI", data)
            end = 9 + (hi << 16 | lo)
            found.append((ftype, flags, stream, data[9:end]))
            data = data[end:]
        return found


class Calls:
    """The handlers behind the test methods, and what happened to them."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []

    async def echo(self, req: pb.ModelReadyRequest) -> pb.ModelReadyRequest:
        return req

    async def wait(self, req: pb.ModelReadyRequest) -> pb.ModelReadyRequest:
        gate = self.gates.setdefault(req.name, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(req.name)
            raise
        return req

    async def not_found(self, req: pb.ModelReadyRequest) -> pb.ModelReadyRequest:
        raise NotFound(f"unknown model '{req.name}'; known: 100% ünïcode")

    async def boom(self, req: pb.ModelReadyRequest) -> pb.ModelReadyRequest:
        raise RuntimeError("a bug")

    async def stream(
        self, requests: AsyncIterator[pb.ModelReadyRequest]
    ) -> AsyncGenerator[pb.ModelReadyRequest, None]:
        try:
            async for req in requests:
                yield req
        finally:
            self.cancelled.append("stream closed")

    def methods(self) -> dict[str, Method]:
        parse, write = pb.ModelReadyRequest.FromString, pb.ModelReadyRequest.SerializeToString
        table: dict[str, Method] = {
            f"/t/{fn.__name__}": Unary(fn, parse, write)
            for fn in (self.echo, self.wait, self.not_found, self.boom)
        }
        table["/t/stream"] = Streaming(self.stream, parse, write)
        return table


class Client:
    """The client's side: its HPACK state, the frames it sends, the answers it reads."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.calls = Calls()
        self.connections = GrpcConnections()
        self.server = GrpcProtocol(self.calls.methods(), self.connections, limit)
        self.transport = FakeTransport()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.server.data_received(data)

    def handshake(self, **settings: int) -> list[Frame]:
        ids = {"initial_window": 0x4, "max_frame": 0x5, "table": 0x1}
        payload = b"".join(struct.pack(">HI", ids[k], v) for k, v in settings.items())
        self.send(PREFACE + frame(SETTINGS, 0, 0, payload))
        return self.transport.frames()

    def block(self, path: str, **extra: str) -> bytes:
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path)]
        fields += [(":authority", "h:1"), ("content-type", "application/grpc")]
        fields += [("te", "trailers"), *extra.items()]
        return bytes(self.encoder.encode(fields))

    def call(self, stream: int, path: str, name: str, end: bool = True) -> bytes:
        message = grpc_message(pb.ModelReadyRequest(name=name).SerializeToString())
        out = frame(HEADERS, END_HEADERS, stream, self.block(path))
        for at in range(0, len(message), 16_384):
            last = end and at + 16_384 >= len(message)
            out += frame(DATA, END_STREAM if last else 0, stream, message[at : at + 16_384])
        return out

    def answers(self) -> list[tuple[int, str, Any]]:
        """(stream, what, value) for each frame written: headers decoded, messages parsed."""
        out: list[tuple[int, str, Any]] = []
        for ftype, flags, stream, payload in self.transport.frames():
            if ftype == HEADERS:
                fields = dict(self.decoder.decode(payload))
                out.append((stream, "end" if flags & END_STREAM else "head", fields))
            elif ftype == DATA:
                message = pb.ModelReadyRequest.FromString(payload[5:])
                out.append((stream, "data", message.name))
            else:
                out.append((stream, _NAMES.get(ftype, str(ftype)), payload))
        return out


_NAMES = {RST_STREAM: "rst", GOAWAY: "goaway", PING: "ping", SETTINGS: "settings"}
_HEAD = {":status": "200", "content-type": "application/grpc"}


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_server_speaks_first_and_acknowledges_settings() -> None:
    client = Client()
    ours, grow = client.transport.frames()
    assert ours[:3] == (SETTINGS, 0, 0)
    announced = dict(struct.iter_unpack(">HI", ours[3]))
    assert announced[0x3] == MAX_STREAMS
    assert announced[0x4] == WINDOW
    assert 0x5 not in announced  # MAX_FRAME_SIZE stays the default
    assert grow[:3] == (WINDOW_UPDATE, 0, 0)
    assert int.from_bytes(grow[3], "big") == WINDOW - 65_535
    assert client.handshake(table=0) == [(SETTINGS, ACK, 0, b"")]
    assert not client.transport.closed


def test_a_unary_call_is_head_message_and_ok_trailers() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/echo", "hello"))
        await settle()
        assert client.answers() == [
            (1, "head", _HEAD),
            (1, "data", "hello"),
            (1, "end", {"grpc-status": "0"}),
        ]
        assert not client.server.busy

    run(scenario)


def test_calls_on_one_connection_run_at_once_and_answer_as_they_finish() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/wait", "first") + client.call(3, "/t/wait", "second"))
        await settle()
        assert client.answers() == []
        assert client.server.busy
        client.calls.gates["second"].set()
        await settle()
        assert [(s, what) for s, what, _ in client.answers()] == [
            (3, "head"),
            (3, "data"),
            (3, "end"),
        ]
        client.calls.gates["first"].set()
        await settle()
        assert [s for s, _, _ in client.answers()] == [1, 1, 1]

    run(scenario)


def test_continuation_padding_priority_and_single_bytes_are_read() -> None:
    async def scenario() -> None:
        client = Client()
        block = client.block("/t/echo")
        message = grpc_message(pb.ModelReadyRequest(name="padded").SerializeToString())
        first = b"\x02" + bytes(5) + block[:3] + b"\x00\x00"  # pad length, priority, padding
        request = (
            PREFACE
            + frame(SETTINGS, 0, 0)
            + frame(HEADERS, PADDED | PRIORITY_FLAG, 1, first)
            + frame(CONTINUATION, 0, 1, block[3:6])
            + frame(CONTINUATION, END_HEADERS, 1, block[6:])
            + frame(DATA, PADDED, 1, b"\x04" + message[:4] + bytes(4))
            + frame(DATA, END_STREAM, 1, message[4:])
        )
        client.transport.frames()  # the server's SETTINGS
        for byte in request:
            client.send(bytes([byte]))
        await settle()
        assert [a for a in client.answers() if a[0] != 0] == [
            (1, "head", _HEAD),
            (1, "data", "padded"),
            (1, "end", {"grpc-status": "0"}),
        ]

    run(scenario)


def test_errors_are_trailers_only_with_their_code_and_message() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/not_found", "x") + client.call(3, "/t/boom", "x"))
        await settle()
        answers = {stream: (what, fields) for stream, what, fields in client.answers()}
        what, fields = answers[1]
        assert what == "end"
        assert fields["grpc-status"] == str(GRPC_NOT_FOUND)
        assert fields["grpc-message"] == "unknown model 'x'; known: 100%25 %C3%BCn%C3%AFcode"
        assert {k: fields[k] for k in _HEAD} == _HEAD
        assert answers[3][1]["grpc-status"] == str(GRPC_INTERNAL)
        assert "see the server log" in answers[3][1]["grpc-message"]
        assert "a bug" not in answers[3][1]["grpc-message"]

    run(scenario)


def test_an_unknown_method_or_encoding_is_unimplemented() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        # answered at its HEADERS, before the message came: the client is told to stop sending
        client.send(frame(HEADERS, END_HEADERS, 1, client.block("/t/nothing")))
        gzip = client.block("/t/echo", **{"grpc-encoding": "gzip"})
        client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, gzip))
        answers = client.answers()
        assert [(s, what) for s, what, _ in answers] == [(1, "end"), (1, "rst"), (3, "end")]
        assert answers[0][2]["grpc-status"] == str(GRPC_UNIMPLEMENTED)
        assert answers[0][2]["grpc-message"] == "unknown method /t/nothing"
        assert answers[1][2] == NO_ERROR.to_bytes(4, "big")
        assert answers[2][2]["grpc-status"] == str(GRPC_UNIMPLEMENTED)
        # the rest of the refused request is dropped; the connection serves on
        client.send(frame(DATA, END_STREAM, 1, grpc_message(b"")))
        client.send(client.call(5, "/t/echo", "still"))
        await settle()
        assert [what for _, what, _ in client.answers()] == ["head", "data", "end"]

    run(scenario)


def test_compressed_and_oversized_messages_are_refused() -> None:
    async def scenario() -> None:
        client = Client(limit=100)
        client.handshake()
        compressed = b"\x01" + (3).to_bytes(4, "big") + b"abc"
        client.send(frame(HEADERS, END_HEADERS, 1, client.block("/t/echo")))
        client.send(frame(DATA, END_STREAM, 1, compressed))
        # refused from its first frame on, as grpcio words it
        client.send(frame(HEADERS, END_HEADERS, 3, client.block("/t/echo")))
        client.send(frame(DATA, 0, 3, b"\x00" + (1000).to_bytes(4, "big") + bytes(50)))
        answers = client.answers()
        assert [(s, what) for s, what, _ in answers] == [(1, "end"), (3, "end"), (3, "rst")]
        assert answers[0][2]["grpc-status"] == str(GRPC_UNIMPLEMENTED)
        assert answers[1][2]["grpc-status"] == str(GRPC_EXHAUSTED)
        assert answers[1][2]["grpc-message"] == "Received message larger than max (1000 vs. 100)"
        client.send(frame(DATA, END_STREAM, 3, bytes(950)))  # dropped
        client.send(client.call(5, "/t/echo", "fine"))
        await settle()
        assert [(s, what) for s, what, _ in client.answers()] == [
            (5, "head"),
            (5, "data"),
            (5, "end"),
        ]

    run(scenario)


def test_window_updates_follow_what_arrives() -> None:
    async def scenario() -> None:
        client = Client(limit=WINDOW)
        client.handshake()
        chunk = bytes(16_384)
        half = WINDOW // 2
        size = half + 5 * len(chunk)
        client.send(frame(HEADERS, END_HEADERS, 1, client.block("/t/echo")))
        client.send(frame(DATA, 0, 1, b"\x00" + size.to_bytes(4, "big")))
        client.send(b"".join(frame(DATA, 0, 1, chunk) for _ in range(half // len(chunk))))
        updates = [(s, int.from_bytes(p, "big")) for t, _, s, p in client.transport.frames()]
        assert sorted(updates) == [(0, half + 5), (1, half + 5)]  # once half a window is used
        assert client.server.busy

    run(scenario)


def test_answers_wait_for_the_clients_windows() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake(initial_window=10)
        name = "n" * 30
        client.send(client.call(1, "/t/echo", name))
        await settle()
        answer = grpc_message(pb.ModelReadyRequest(name=name).SerializeToString())
        head, data = client.transport.frames()
        assert head[0] == HEADERS
        assert data == (DATA, 0, 1, answer[:10])
        client.send(frame(WINDOW_UPDATE, 0, 1, (10).to_bytes(4, "big")))
        assert client.transport.frames() == [(DATA, 0, 1, answer[10:20])]
        # a larger initial window also grows the open stream's window (RFC 9113 6.9.2)
        settings = frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 1000))
        client.send(settings)
        ack, rest, end = client.transport.frames()
        assert ack == (SETTINGS, ACK, 0, b"")
        assert rest == (DATA, 0, 1, answer[20:])
        assert end[:3] == (HEADERS, END_HEADERS | END_STREAM, 1)

    run(scenario)


def test_large_answers_are_cut_to_the_frame_size_and_the_connection_window() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake(initial_window=1 << 20)
        name = "z" * 100_000
        client.send(client.call(1, "/t/echo", name))
        await settle()
        written = client.transport.frames()
        data = [p for t, _, _, p in written if t == DATA]
        assert [len(p) for p in data] == [16_384] * 3 + [65_535 - 3 * 16_384]
        assert written[-1][0] == DATA  # the connection's window is used up: no trailers yet
        client.send(frame(WINDOW_UPDATE, 0, 0, (1 << 20).to_bytes(4, "big")))
        rest = client.transport.frames()
        assert rest[-1][:3] == (HEADERS, END_HEADERS | END_STREAM, 1)
        body = b"".join(data + [p for t, _, _, p in rest if t == DATA])
        assert pb.ModelReadyRequest.FromString(body[5:]).name == name

    run(scenario)


def test_pings_are_acknowledged() -> None:
    client = Client()
    client.handshake()
    client.send(frame(PING, 0, 0, b"12345678") + frame(PING, ACK, 0, b"87654321"))
    assert client.transport.frames() == [(PING, ACK, 0, b"12345678")]


def test_a_reset_stream_cancels_its_call_only() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/wait", "dropped") + client.call(3, "/t/wait", "kept"))
        await settle()
        client.send(frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))
        await settle()
        assert client.calls.cancelled == ["dropped"]
        client.calls.gates["kept"].set()
        await settle()
        assert [(s, what) for s, what, _ in client.answers()] == [
            (3, "head"),
            (3, "data"),
            (3, "end"),
        ]
        assert not client.server.busy

    run(scenario)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        PREFACE + frame(PING, 0, 0, bytes(8)),  # no SETTINGS first
        PREFACE + frame(SETTINGS, 0, 0) + frame(DATA, 0, 0, b"x"),  # DATA on stream 0
        PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 2, b"\x88"),  # even id
        PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff"),
        PREFACE + frame(SETTINGS, 0, 0) + frame(DATA, 0, 1, bytes(16_385)),  # over the frame size
    ],
    ids=["http1", "no-settings", "data-on-0", "even-stream", "bad-hpack", "too-large"],
)
def test_a_client_that_breaks_http2_gets_goaway(garbage: bytes) -> None:
    client = Client()
    client.transport.frames()
    client.send(garbage)
    (goaway,) = [f for f in client.transport.frames() if f[0] != SETTINGS]
    assert goaway[:3] == (GOAWAY, 0, 0)
    assert int.from_bytes(goaway[3][4:8], "big") != NO_ERROR
    assert client.transport.closed


def test_shutdown_sends_goaway_and_lets_calls_in_flight_finish() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/wait", "last"))
        await settle()
        draining = asyncio.ensure_future(client.connections.drain(timeout_s=10))
        await settle()
        (goaway,) = client.transport.frames()
        assert goaway == (GOAWAY, 0, 0, (1).to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big"))
        client.send(client.call(3, "/t/echo", "too late"))
        assert client.transport.frames() == [(RST_STREAM, 0, 3, REFUSED_STREAM.to_bytes(4, "big"))]
        assert not client.transport.closed
        client.calls.gates["last"].set()
        await draining
        assert [(s, what) for s, what, _ in client.answers()] == [
            (1, "head"),
            (1, "data"),
            (1, "end"),
        ]
        assert client.transport.closed

    run(scenario)


def test_draining_is_bounded() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/wait", "forever"))
        await settle()
        await client.connections.drain(timeout_s=0.05)
        assert client.transport.closed
        client.server.connection_lost(None)
        await settle()
        assert client.calls.cancelled == ["forever"]

    run(scenario)


def test_a_streaming_call_answers_each_request_as_it_comes() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/stream", "one", end=False))
        await settle()
        assert client.answers() == [(1, "head", _HEAD), (1, "data", "one")]
        two = grpc_message(pb.ModelReadyRequest(name="two").SerializeToString())
        three = grpc_message(pb.ModelReadyRequest(name="three").SerializeToString())
        client.send(frame(DATA, 0, 1, two + three[:3]))
        await settle()
        assert client.answers() == [(1, "data", "two")]
        client.send(frame(DATA, 0, 1, three[3:]) + frame(DATA, END_STREAM, 1, b""))
        await settle()
        assert client.answers() == [(1, "data", "three"), (1, "end", {"grpc-status": "0"})]
        assert not client.server.busy

    run(scenario)


def test_a_reset_streaming_call_closes_its_handler() -> None:
    async def scenario() -> None:
        client = Client()
        client.handshake()
        client.send(client.call(1, "/t/stream", "one", end=False))
        await settle()
        client.send(frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))
        await settle()
        assert client.calls.cancelled == ["stream closed"]
        assert not client.server.busy

    run(scenario)


def test_a_message_split_anywhere_is_read_once_whole() -> None:
    messages = [b"", b"a", b"x" * 70_000]
    stream = b"".join(grpc_message(m) for m in messages)
    for cut in (1, 3, 5, 7, 16_384):
        reader = MessageReader(limit=100_000)
        for at in range(0, len(stream), cut):
            reader.feed(stream[at : at + cut])
        assert reader.messages == messages
        assert not reader.partial


def test_grpc_message_is_percent_encoded_and_cut() -> None:
    assert percent_encode("plain words: ok") == b"plain words: ok"
    assert percent_encode("50% é\n") == b"50%25 %C3%A9%0A"
    long = percent_encode("é" * 10_000)
    assert len(long) <= 4096
    assert long.endswith(b"...")
