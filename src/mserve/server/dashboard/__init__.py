"""The live dashboard: a short history of per-model figures, and the page that draws it.

The page (``static/``) is ours, served from the package: nothing comes from a CDN.
"""

from __future__ import annotations

from importlib import resources

from mserve.server.dashboard.history import History

__all__ = ["History", "static_file"]

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}


def static_file(name: str) -> tuple[bytes, bytes] | None:
    """The bytes and content type of one file of the page, or None when there is no such file."""
    if "/" in name or name.startswith(".") or not name:
        return None
    suffix = name[name.rfind(".") :] if "." in name else ""
    ctype = _TYPES.get(suffix)
    if ctype is None:
        return None
    path = resources.files(__package__).joinpath("static", name)
    if not path.is_file():
        return None
    return path.read_bytes(), ctype
