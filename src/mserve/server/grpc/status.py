"""The one table that maps mserve's errors to gRPC status codes."""

from __future__ import annotations

import grpc

from mserve import errors

#: Most specific class first; the first match wins.
CODES: tuple[tuple[type[errors.MserveError], grpc.StatusCode], ...] = (
    (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.RouteNotFound, grpc.StatusCode.UNIMPLEMENTED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ServerBusy, grpc.StatusCode.UNAVAILABLE),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.ModelFailure, grpc.StatusCode.INTERNAL),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.RepositoryError, grpc.StatusCode.FAILED_PRECONDITION),
)


def code_of(exc: errors.MserveError) -> grpc.StatusCode:
    """The gRPC status code for an error (INTERNAL for anything unforeseen)."""
    for cls, code in CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL
