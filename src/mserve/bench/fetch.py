"""One-off HTTP requests for the control plane (metadata, statistics, readiness).

Not the hot path: a fresh connection per call, a timeout, and errors that say what failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from mserve.errors import Unavailable


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a target listens: scheme, host, port and a base path."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse ``http://host:port[/base]``; a bare ``host:port`` means http."""
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http",):
            raise ValueError(f"unsupported URL scheme '{parts.scheme}' in {url}; expected http")
        if not parts.hostname:
            raise ValueError(f"no host in URL {url}; expected e.g. http://127.0.0.1:8000")
        port = parts.port or 80
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
) -> tuple[int, bytes]:
    """Send one request and return (status, body); Unavailable when the target cannot answer."""
    from mserve.bench.connection import build_request

    full_path = endpoint.base_path + path
    request = build_request(
        method, endpoint.authority, full_path, body, {"Connection": "close", **(headers or {})}
    )
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise Unavailable(
            f"cannot connect to {endpoint}: {exc.strerror if isinstance(exc, OSError) else exc}"
            if str(exc)
            else f"cannot connect to {endpoint}: timed out after {timeout} s"
        ) from None
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
    except (OSError, TimeoutError, httptools.HttpParserError) as exc:
        raise Unavailable(f"{method} {endpoint}{path} failed: {exc or 'timed out'}") from None
    finally:
        writer.close()
    if not collector.done:
        raise Unavailable(f"{method} {endpoint}{path}: connection closed before a full response")
    return parser.get_status_code(), b"".join(collector.body)
