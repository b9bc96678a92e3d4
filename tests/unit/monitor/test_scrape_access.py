"""The monitor's scraper against secured servers, as values: https URLs, headers, TLS settings
that fit the URL. No sockets (the real exchange is in tests/integration/test_secure_clients.py)."""

from __future__ import annotations

import pytest

from mserve.bench.tls import ClientTls
from mserve.monitor.scrape import HttpScraper, metrics_url


def test_https_urls_are_metrics_urls() -> None:
    assert metrics_url("https://h:8443") == "https://h:8443/metrics"
    with pytest.raises(ValueError, match="expected http or https"):
        metrics_url("grpcs://h:1")


def test_the_scraper_keeps_the_headers_and_checks_tls_against_the_url() -> None:
    scraper = HttpScraper("https://h:1/metrics", headers={"Authorization": "Bearer k"})
    assert scraper.headers == {"Accept": "text/plain", "Authorization": "Bearer k"}
    assert scraper.tls == ClientTls()  # https: the system's CAs unless told otherwise
    assert HttpScraper("http://h:1/metrics").tls is None
    with pytest.raises(ValueError, match="give an https:// URL"):
        HttpScraper("http://h:1/metrics", tls=ClientTls(insecure=True))


def test_a_redirect_to_another_origin_does_not_carry_the_key() -> None:
    """The scrape follows a redirect, but the API key stays with the server it was meant for."""
    import http.server
    import threading

    from mserve.monitor.scrape import HttpScraper

    seen: dict[str, str | None] = {}

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen["authorization"] = self.headers.get("Authorization")
            body = b"# TYPE mserve_inflight_requests gauge\nmserve_inflight_requests 0\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    port = target.server_address[1]

    class Redirect(Target):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/metrics")
            self.send_header("Content-Length", "0")
            self.end_headers()

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (target, origin)]
    for t in threads:
        t.start()
    try:
        scrape = HttpScraper(
            f"http://127.0.0.1:{origin.server_address[1]}/metrics",
            headers={"Authorization": "Bearer secret-0123456789abcdef"},
        )
        scrape()
        assert seen == {"authorization": None}
    finally:
        for s in (target, origin):
            s.shutdown()
            s.server_close()
