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
