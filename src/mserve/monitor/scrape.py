"""Fetching ``/metrics`` over HTTP or HTTPS: the only I/O of the monitor.

A scraper is any callable that returns a :class:`Snapshot`; :class:`HttpScraper` is the real one
and a test passes a function over fixed texts instead. Headers (an API key) and the TLS
settings are the bench's (:mod:`mserve.bench.headers`, :mod:`mserve.bench.tls`), so both tools
take and word them alike.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mserve.bench.headers import refused
from mserve.bench.tls import ClientTls, failure_reason, for_scheme
from mserve.errors import NotFound, Unavailable
from mserve.monitor.snapshot import Snapshot, UnrecognisedMetrics, parse

Scraper = Callable[[], Snapshot]

#: a response larger than this is not a metrics page of a server we know
MAX_BYTES = 64 * 1024 * 1024


def metrics_url(url: str) -> str:
    """The metrics URL for ``url``: a base URL gets ``/metrics``, a ``.../metrics`` URL is kept,
    a bare ``host:port`` means http. ValueError for another scheme or no host."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported URL scheme '{parts.scheme}' in {url}; expected http or https"
        )
    if not parts.hostname:
        raise ValueError(f"no host in URL {url}; expected e.g. http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/metrics"):
        path += "/metrics"
    return f"{parts.scheme}://{parts.netloc}{path}"


class HttpScraper:
    """GET ``url`` (a metrics URL) and parse it, each call within ``timeout`` seconds.

    ``headers`` go with each request (``Authorization: Bearer KEY``); an https URL is verified
    with ``tls`` (default: the system's CAs). Raises Unavailable when nothing answers (no
    connection, a time-out, a certificate not verified), Unauthenticated / Forbidden for a 401 /
    403, and NotFound when something answers without mserve's or Triton's metrics (another
    status, other text). ValueError when ``tls`` comes with an http URL.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.headers = {"Accept": "text/plain", **(headers or {})}
        self.tls = for_scheme(urlsplit(url).scheme, tls, url)

    def __call__(self) -> Snapshot:
        request = urllib.request.Request(self.url, headers=self.headers)
        context = self.tls.context("http/1.1") if self.tls is not None else None
        handlers: list[urllib.request.BaseHandler] = [_KeepKeysHome()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(request, timeout=self.timeout) as r:
                body = r.read(MAX_BYTES)
        except urllib.error.HTTPError as exc:
            detail = exc.read(4096) if exc.code in (401, 403) else b""
            exc.close()
            if exc.code in (401, 403):
                raise refused(exc.code, detail, f"GET {self.url}") from None
            raise NotFound(
                f"{self.url} answered HTTP {exc.code} {exc.reason}; expected Prometheus metrics"
                f"{_hint(self.url)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            why = failure_reason(reason) if isinstance(reason, BaseException) else reason
            raise Unavailable(f"cannot reach {self.url}: {why}") from None
        taken = time.monotonic()
        try:
            return parse(body.decode("utf-8", errors="replace"), taken)
        except UnrecognisedMetrics as exc:
            raise NotFound(f"{self.url} answered, but with {exc}{_hint(self.url)}") from None


class _KeepKeysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never carries credentials to another scheme, host or port."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old_origin = urlsplit(req.full_url)[:2]
        if new is not None and urlsplit(new.full_url)[:2] != old_origin:
            for name in ("Authorization", "X-api-key"):  # urllib capitalises header names
                new.headers.pop(name, None)
                new.unredirected_hdrs.pop(name, None)
        return new


def _hint(url: str) -> str:
    if urlsplit(url).port == 8000:
        return " (a Triton server serves them on its metrics port, 8002 by default)"
    return ""
