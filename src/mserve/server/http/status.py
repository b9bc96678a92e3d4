"""The one table that maps mserve's errors to HTTP statuses."""

from __future__ import annotations

from mserve import errors

#: Most specific class first; the first match wins.
STATUS: tuple[tuple[type[errors.MserveError], int], ...] = (
    (errors.PayloadTooLarge, 413),
    (errors.HeadersTooLarge, 431),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.Unsupported, 501),
    (errors.InvalidRequest, 400),
    (errors.RouteNotFound, 404),
    (errors.ModelNotFound, 404),
    (errors.NotFound, 404),
    (errors.Unavailable, 503),
    (errors.DeadlineExceeded, 504),
    (errors.ModelFailure, 500),
    (errors.ConfigError, 400),
    (errors.RepositoryError, 400),
)


def status_of(exc: errors.MserveError) -> int:
    """The HTTP status for an error (500 for anything unforeseen)."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500
