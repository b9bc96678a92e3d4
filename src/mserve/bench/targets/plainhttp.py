"""Any HTTP or HTTPS endpoint: a fixed request body (with the user's headers), judged by status
code and, optionally, content."""

from __future__ import annotations

from pathlib import Path

from mserve.bench.connection import build_request, connector
from mserve.bench.fetch import Endpoint
from mserve.bench.headers import merged
from mserve.bench.targets.base import Check, Prepared, ServerStats
from mserve.bench.tls import ClientTls, for_scheme
from mserve.errors import InvalidRequest


class PlainHttpTarget:
    """For servers that speak neither V2 nor TF Serving: send one body, check the answer."""

    protocol = "http"

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        body: Path | None = None,
        content_type: str = "application/json",
        expect_status: int = 200,
        expect_contains: str | None = None,
        headers: dict[str, str] | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        """``headers`` go with every request; ``tls`` verifies an https:// server."""
        self.endpoint = Endpoint.parse(url)
        self.tls = for_scheme(self.endpoint.scheme, tls, url)
        self.method = method.upper()
        self.body_path = body
        self.content_type = content_type
        self.expect_status = expect_status
        self.expect_contains = expect_contains.encode() if expect_contains else None
        self.headers = headers or {}

    async def prepare(self) -> Prepared:
        body = b""
        if self.body_path is not None:
            if not self.body_path.is_file():
                raise InvalidRequest(f"--body {self.body_path}: no such file")
            body = self.body_path.read_bytes()
        headers = merged({"Content-Type": self.content_type} if body else {}, self.headers)
        request = build_request(
            self.method, self.endpoint.authority, self.endpoint.base_path or "/", body, headers
        )
        return Prepared(
            host=self.endpoint.host,
            port=self.endpoint.port,
            requests=[request],
            check=self._check(),
            keep_body=self.expect_contains is not None,
            connect=connector(self.tls),
            description={
                "protocol": self.protocol,
                "url": str(self.endpoint),
                "method": self.method,
                "request_bytes": [len(request)],
            },
        )

    def _check(self) -> Check:
        return ContentCheck(self.expect_status, self.expect_contains)

    async def server_stats(self) -> ServerStats | None:
        return None


class ContentCheck:
    """Right when the status matches and the body holds the expected bytes (picklable)."""

    def __init__(self, status: int, needle: bytes | None) -> None:
        self.status = status
        self.needle = needle

    def __call__(self, status: int, body: bytes) -> str | None:
        if status != self.status:
            return f"http_{status}"
        if self.needle is not None and self.needle not in body:
            return "wrong_content"
        return None
