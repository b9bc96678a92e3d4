"""API keys with scopes: who may infer, manage models, and read metrics.

Keys come from a file (``--api-keys FILE``) or the ``MSERVE_API_KEYS`` environment variable, one
per line (or ``;``-separated in the variable)::

    # key                              scopes
    3f6c0c5e9b1d4a7f8e2b6d0c1a9f4e7b   inference
    a1b2c3d4e5f60718293a4b5c6d7e8f90   inference,management,metrics
    0badc0ffee0ddf00d0badc0ffee0ddf0   *

Clients send ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``) over HTTP, and the
``authorization`` metadata over gRPC. The keys are kept only as SHA-256 digests and compared
with :func:`hmac.compare_digest` against every known digest, so the time a check takes says
nothing about how much of a key was right. Without keys the server is open; health probes and
the OpenAPI document are always open.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from mserve.errors import ConfigError, Forbidden, Unauthenticated

INFERENCE, MANAGEMENT, METRICS = "inference", "management", "metrics"
SCOPES = (INFERENCE, MANAGEMENT, METRICS)
ENV_VAR = "MSERVE_API_KEYS"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class _Key:
    digest: bytes
    scopes: frozenset[str]


class ApiKeys:
    """The known keys and their scopes; :meth:`check` admits or refuses one request."""

    def __init__(self, keys: dict[str, frozenset[str]]) -> None:
        self._keys = tuple(_Key(_digest(k.encode()), s) for k, s in keys.items())

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, credential: bytes | None, scope: str) -> None:
        """Admit a request needing ``scope`` with this credential (the key itself, already
        taken out of its header); raise Unauthenticated or Forbidden otherwise."""
        if not self._keys:
            return
        if not credential:
            raise Unauthenticated(
                f"this server needs an API key with the '{scope}' scope; send it as "
                "'Authorization: Bearer KEY'"
            )
        digest = _digest(credential)
        found: _Key | None = None
        for key in self._keys:  # every key is compared, matched or not
            if hmac.compare_digest(key.digest, digest):
                found = key
        if found is None:
            raise Unauthenticated("the API key is not valid")
        if scope not in found.scopes:
            raise Forbidden(
                f"the API key is valid but lacks the '{scope}' scope (it has "
                f"{', '.join(sorted(found.scopes))})"
            )


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def bearer(value: bytes | None) -> bytes | None:
    """The key in an ``Authorization`` value (``Bearer KEY``), or None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


def parse_keys(text: str, source: str) -> dict[str, frozenset[str]]:
    """Keys and scopes from the file format above; ConfigError names the line at fault."""
    keys: dict[str, frozenset[str]] = {}
    for n, raw in enumerate(text.replace(";", "\n").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"line {n}"
        if len(fields) != 2:
            # never echo the line: it holds a key
            raise ConfigError(
                source, where, "'KEY SCOPE[,SCOPE...]' (two fields)", f"{len(fields)} fields"
            )
        key, scope_text = fields
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                source, where, f"a key of at least {MIN_KEY_LENGTH} characters", f"{len(key)}"
            )
        scopes = {s.strip() for s in scope_text.split(",") if s.strip()}
        if "*" in scopes:
            scopes = set(SCOPES)
        unknown = scopes - set(SCOPES)
        if unknown or not scopes:
            # short words are echoed; a long one may be a key put where a scope goes
            shown = ["(a long word)" if len(w) >= MIN_KEY_LENGTH else w for w in sorted(unknown)]
            raise ConfigError(
                source, where, f"scopes among {', '.join(SCOPES)} or *", ",".join(shown) or "none"
            )
        if key in keys:
            raise ConfigError(source, where, "each key once", "a repeated key")
        keys[key] = frozenset(scopes)
    return keys


def load_keys(path: str = "", env_text: str = "") -> ApiKeys:
    """The keys of the file at ``path`` if given, else of ``env_text`` (what the CLI read from
    ``$MSERVE_API_KEYS``), else none: an open server. A file that names no key is an error: it
    would leave the server open."""
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(path, "api keys", "a readable file", exc.strerror) from None
        keys = parse_keys(text, path)
        if not keys:
            raise ConfigError(path, "api keys", "at least one 'KEY SCOPES' line", "none")
        return ApiKeys(keys)
    return ApiKeys(parse_keys(env_text, f"${ENV_VAR}")) if env_text.strip() else ApiKeys({})
