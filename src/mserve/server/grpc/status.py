"""gRPC status codes, and the one table that maps mserve's errors to them.

The codes are the numbers of gRPC's specification (``google.rpc.Code``); the server needs no
gRPC library to answer with them.
"""

from __future__ import annotations

from enum import IntEnum

from mserve import errors


class Code(IntEnum):
    """gRPC status codes (the ones a V2 server answers with)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


#: Most specific class first; the first match wins.
CODES: tuple[tuple[type[errors.MserveError], Code], ...] = (
    (errors.PayloadTooLarge, Code.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, Code.UNAUTHENTICATED),
    (errors.Forbidden, Code.PERMISSION_DENIED),
    (errors.Unsupported, Code.UNIMPLEMENTED),
    (errors.InvalidRequest, Code.INVALID_ARGUMENT),
    (errors.RouteNotFound, Code.UNIMPLEMENTED),
    (errors.NotFound, Code.NOT_FOUND),
    (errors.ServerBusy, Code.UNAVAILABLE),
    (errors.Unavailable, Code.UNAVAILABLE),
    (errors.DeadlineExceeded, Code.DEADLINE_EXCEEDED),
    (errors.ModelFailure, Code.INTERNAL),
    (errors.ConfigError, Code.INVALID_ARGUMENT),
    (errors.RepositoryError, Code.FAILED_PRECONDITION),
)


def code_of(exc: errors.MserveError) -> Code:
    """The gRPC status code for an error (INTERNAL for anything unforeseen)."""
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return Code.INTERNAL
