"""The client's deadline over HTTP: the ``X-Request-Timeout`` header, in seconds.

(Triton's ``timeout`` request parameter, in microseconds, is read by the data plane for every
transport.)
"""

from __future__ import annotations

import math
import time

from mserve.errors import MalformedRequest

HEADER = b"x-request-timeout"
MAX_SECONDS = 1e7  # longer (about four months) counts as this: no request waits that long


def deadline_of(headers: dict[bytes, bytes]) -> int:
    """The deadline the request's header sets, on the ``perf_counter_ns`` clock; 0: none."""
    raw = headers.get(HEADER)
    if raw is None:
        return 0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise MalformedRequest(
            f"X-Request-Timeout must be a positive number of seconds (e.g. 0.25), got "
            f"{raw.decode('latin-1')!r}"
        )
    return time.perf_counter_ns() + int(min(seconds, MAX_SECONDS) * 1e9)
