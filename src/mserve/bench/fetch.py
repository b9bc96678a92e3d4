"""One-off HTTP requests for the control plane (metadata, statistics, readiness).

Not the hot path: a fresh connection per call (over TLS for https), a timeout, and errors that
say what failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from mserve.bench.tls import ClientTls, failure_reason
from mserve.errors import Unavailable

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a target listens: scheme, host, port and a base path."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse ``http(s)://host:port[/base]``; a bare ``host:port`` means http."""
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"unsupported URL scheme '{parts.scheme}' in {url}; expected http or https"
            )
        if not parts.hostname:
            raise ValueError(f"no host in URL {url}; expected e.g. http://127.0.0.1:8000")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"


class _Collector:
    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


async def fetch(
    endpoint: Endpoint,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    tls: ClientTls | None = None,
) -> tuple[int, bytes]:
    """Send one request and return (status, body); Unavailable when the target cannot answer.
    An https endpoint is reached over ``tls`` (default: verified with the system's CAs)."""
    from mserve.bench.connection import build_request

    full_path = endpoint.base_path + path
    request = build_request(
        method, endpoint.authority, full_path, body, {**(headers or {}), "Connection": "close"}
    )
    secure: dict[str, Any] = {}
    if endpoint.scheme == "https":
        context = (tls or ClientTls()).context("http/1.1")
        secure = {"ssl": context, "server_hostname": endpoint.host}
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port, **secure), timeout
        )
    except TimeoutError:
        raise Unavailable(f"cannot connect to {endpoint}: timed out after {timeout} s") from None
    except OSError as exc:  # ssl.SSLError included
        raise Unavailable(f"cannot connect to {endpoint}: {failure_reason(exc)}") from None
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            while not collector.done:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise Unavailable(
            f"{method} {endpoint}{path}: the answer is not HTTP/1.1 ({exc}; is this the gRPC port?)"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"{method} {endpoint}{path} failed: {exc or 'timed out'}") from None
    finally:
        writer.close()
    if not collector.done:
        hint = " (a TLS port? then give an https:// URL)" if endpoint.scheme == "http" else ""
        raise Unavailable(
            f"{method} {endpoint}{path}: connection closed before a full response{hint}"
        )
    return parser.get_status_code(), b"".join(collector.body)
