"""HTTP/1.1 on the wire: keep-alive, pipelining, 100-continue, limits, malformed requests."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

pytestmark = pytest.mark.integration

INFER = b'{"inputs":[{"name":"INPUT","shape":[1,2],"datatype":"FP32","data":[1.5,-2]}]}'


def open_socket(served: Any) -> socket.socket:
    s = socket.create_connection((served.process.host, served.process.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def read_responses(s: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` complete responses (content-length framed) from the socket."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = s.recv(65536)
            assert chunk, "connection closed inside a body"
            buf += chunk
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    return out


def test_keep_alive_serves_many_requests_on_one_connection(served: Any) -> None:
    with open_socket(served) as s:
        for _ in range(5):
            s.sendall(post("/v2/models/identity_fp32/infer", INFER))
            [(status, headers, body)] = read_responses(s, 1)
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["outputs"][0]["data"] == [1.5, -2.0]
            assert "date" in headers


def test_pipelined_requests_are_answered_in_order(served: Any) -> None:
    bodies = [INFER.replace(b"1.5", str(i).encode()) for i in range(8)]
    wire = b"".join(post("/v2/models/identity_fp32/infer", b) for b in bodies)
    wire += b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"
    with open_socket(served) as s:
        s.sendall(wire)
        replies = read_responses(s, 9)
    for i, (status, _, body) in enumerate(replies[:8]):
        assert status == 200
        assert json.loads(body)["outputs"][0]["data"][0] == float(i)
    assert replies[8][0] == 200
    assert json.loads(replies[8][2]) == {"ready": True}


def test_expect_100_continue_gets_an_interim_response(served: Any) -> None:
    head = post("/v2/models/identity_fp32/infer", b"", "Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(INFER)}".encode())
    with open_socket(served) as s:
        s.sendall(head)
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(INFER)
        [(status, _, body)] = read_responses(s, 1)
    assert status == 200
    assert json.loads(body)["outputs"][0]["data"] == [1.5, -2.0]


def test_connection_close_is_honoured(served: Any) -> None:
    with open_socket(served) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        [(status, headers, _)] = read_responses(s, 1)
        assert status == 200
        assert headers["connection"] == "close"
        assert s.recv(10) == b""


def test_malformed_http_gets_400_and_the_server_goes_on(served: Any) -> None:
    with open_socket(served) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        [(status, _, body)] = read_responses(s, 1)
    assert status == 400
    assert "malformed HTTP request" in json.loads(body)["error"]
    reply = served.request("GET", "/v2/health/live")
    assert reply.status == 200


def test_percent_encoded_paths_are_decoded(served: Any) -> None:
    reply = served.request("GET", "/v2/models/identity%5Ffp32")
    assert reply.status == 200
    assert reply.json()["name"] == "identity_fp32"


def test_query_strings_are_ignored_by_routing(served: Any) -> None:
    assert served.request("GET", "/v2/health/ready?probe=1").status == 200
