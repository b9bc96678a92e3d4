"""Headers a user adds to every request (``-H 'Name: value'``, as curl and perf_analyzer take
them): parsed and checked once, merged into the bench's own, sent as metadata over gRPC, kept
out of saved command lines, and what a server's 401 / 403 means for them.

Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import orjson

from mserve.errors import Forbidden, MserveError, Unauthenticated

#: the fix for a 401, as every client tool of mserve words it
NEEDS_KEY = "the server needs an API key: pass -H 'Authorization: Bearer KEY'"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field name
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF, NUL and other controls
#: set by the bench from the URL and the body; a second copy would break the request
_OWN_HTTP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
#: set by the bench's gRPC client; HTTP/2 forbids connection-specific fields
_OWN_GRPC = _OWN_HTTP | {"content-type", "te", "keep-alive", "upgrade", "proxy-connection"}

Headers = dict[str, str]


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value), the value stripped; ValueError names what is wrong."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name:
        raise ValueError(f"-H {text!r}: expected 'Name: value'")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"-H {text!r}: '{name}' is not a valid header name")
    if _BAD_VALUE.search(value):
        raise ValueError(f"-H {name}: the value holds a control character (CR, LF, NUL, ...)")
    if not value.isascii():
        raise ValueError(f"-H {name}: the value must be ASCII")
    if name.lower() in _OWN_HTTP:
        raise ValueError(f"-H {name}: the bench sets this header itself")
    return name, value


def parse_headers(texts: Sequence[str]) -> Headers:
    """Every ``-H`` in order; a later one replaces an earlier one of the same name (in any
    case)."""
    headers: Headers = {}
    for text in texts:
        name, value = parse_header(text)
        headers = merged(headers, {name: value})
    return headers


def merged(base: Mapping[str, str], extra: Mapping[str, str]) -> Headers:
    """``base`` with ``extra`` added; an extra header replaces a base one of the same name
    (names compare case-insensitively), so a user's ``-H 'Content-Type: ...'`` wins."""
    replaced = {name.lower() for name in extra}
    out = {k: v for k, v in base.items() if k.lower() not in replaced}
    out.update(extra)
    return out


def grpc_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The headers as gRPC metadata: names lower-cased (HTTP/2 requires it). ValueError for a
    name the gRPC client sets itself or HTTP/2 forbids."""
    out = []
    for name, value in headers.items():
        low = name.lower()
        if low in _OWN_GRPC:
            raise ValueError(
                f"-H {name}: the gRPC client sets this header itself (or HTTP/2 forbids it)"
            )
        out.append((low, value))
    return tuple(out)


def redact_command(argv: Sequence[str]) -> list[str]:
    """A command line fit to save: each ``-H`` keeps its name and loses its value (an API key
    must never reach a results database or a report)."""
    out: list[str] = []
    after_flag = False
    for arg in argv:
        if after_flag:
            out.append(_redact(arg))
            after_flag = False
        elif arg in ("-H", "--header"):
            out.append(arg)
            after_flag = True
        elif arg.startswith("--header="):
            out.append("--header=" + _redact(arg.removeprefix("--header=")))
        elif arg.startswith("-H") and not arg.startswith("--"):
            out.append("-H" + _redact(arg[2:]))
        else:
            out.append(arg)
    return out


def _redact(header: str) -> str:
    name, colon, _ = header.partition(":")
    return f"{name.strip()}: ***" if colon else "***"


def refused(status: int, body: bytes | str, where: str, answer: str = "") -> MserveError:
    """The error for a 401 (Unauthenticated) or 403 (Forbidden) answer at ``where`` (e.g.
    ``GET https://host:8000/v2/models/m``), with the server's reason and what to pass;
    ``answer`` names the answer when it is not an HTTP status (gRPC's UNAUTHENTICATED)."""
    reason = _reason(body)
    said = f"{where} answered {answer or status}" + (f" ({reason})" if reason else "")
    if status == 401:
        return Unauthenticated(f"{said}: {NEEDS_KEY}")
    return Forbidden(
        f"{said}: pass -H 'Authorization: Bearer KEY' with a key that is allowed this call"
    )


def _reason(body: bytes | str) -> str:
    """A server's own words: V2's and TF Serving's ``{"error": ...}``, else the text's start."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return raw[:200].decode("utf-8", "replace").strip()
