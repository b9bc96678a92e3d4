"""TLS for the bench's connections (and the monitor's scrapes): which CA verifies the server.

A :class:`ClientTls` is a small frozen value, so it travels to generator processes; each
process builds its :class:`ssl.SSLContext` once per ALPN protocol and reuses it for every
connection (``http/1.1`` for HTTPS, ``h2`` for gRPC over TLS).
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path

#: what to do when the server's certificate cannot be verified
HINT = "pass --ca-file CA.pem (or --insecure to skip verification, for testing only)"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How a client verifies the server: the CA certificates of ``ca_file`` (PEM; None: the
    system's), or, with ``insecure``, not at all (for testing only)."""

    ca_file: str | None = None
    insecure: bool = False

    @classmethod
    def from_options(cls, ca_file: str | None, insecure: bool) -> ClientTls | None:
        """The settings of ``--ca-file`` / ``--insecure`` (None when neither is given), the CA
        file loaded once to check it; ValueError when both are given or the file is wrong."""
        if ca_file is None and not insecure:
            return None
        if ca_file is not None and insecure:
            raise ValueError("give --ca-file or --insecure, not both")
        tls = cls(ca_file, insecure)
        tls.check()
        return tls

    def context(self, alpn: str) -> ssl.SSLContext:
        """The client context offering ``alpn`` (``http/1.1`` or ``h2``); built once per
        process and protocol."""
        return _context(self, alpn)

    def check(self) -> None:
        """Load the CA file now, so that a wrong one is a usage error before any request
        (ValueError that names the file)."""
        if self.ca_file is None:
            return
        if not Path(self.ca_file).is_file():
            raise ValueError(f"--ca-file {self.ca_file}: no such file")
        try:
            ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"--ca-file {self.ca_file}: not PEM CA certificates ({exc})") from None


@functools.lru_cache(maxsize=16)
def _context(tls: ClientTls, alpn: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    return context


def for_scheme(scheme: str, tls: ClientTls | None, url: str) -> ClientTls | None:
    """The TLS a URL's scheme calls for: ``tls`` (or the system's CAs) for https / grpcs,
    None for http / grpc. ValueError when TLS options come with a plain-text URL."""
    if scheme in ("https", "grpcs"):
        return tls or ClientTls()
    if tls is not None and tls != ClientTls():
        secure = "a grpcs" if scheme == "grpc" else "an https"
        raise ValueError(
            f"--ca-file and --insecure are for a TLS server, but {url} is plain text; "
            f"give {secure}:// URL"
        )
    return None


def failure_reason(exc: BaseException) -> str:
    """Why a TLS connection failed, with what to do when the certificate was refused."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or str(exc)
        return f"the server's certificate was not verified ({why}); {HINT}"
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or str(exc)
        return f"the TLS handshake failed ({why}; is this a TLS port?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
