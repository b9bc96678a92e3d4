"""The one table from mserve's errors to HTTP statuses."""

from __future__ import annotations

import pytest

from mserve import errors
from mserve.server.http.status import status_of


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.PayloadTooLarge(10, 5), 413),
        (errors.MalformedRequest("bad json"), 400),
        (errors.InvalidInput("m", "x", "wrong shape"), 400),
        (errors.InvalidRequest("no"), 400),
        (errors.ModelNotFound("m"), 404),
        (errors.ModelNotFound("m", "2", ["1"]), 404),
        (errors.RouteNotFound("GET", "/x"), 404),
        (errors.ModelNotReady("m", None, "UNAVAILABLE"), 503),
        (errors.Unavailable("busy"), 503),
        (errors.ServerBusy("m", "1", 8, 8), 503),
        (errors.DeadlineExceeded("m", "1", 900, 500), 504),
        (errors.ModelFailure("m", "1", "boom"), 500),
        (errors.ConfigError("f", "x", "y"), 400),
        (errors.RepositoryError("p", "q"), 400),
        (errors.MserveError("anything else"), 500),
    ],
)
def test_status_of(error: errors.MserveError, status: int) -> None:
    assert status_of(error) == status


def test_messages_are_built_from_typed_fields() -> None:
    assert str(errors.PayloadTooLarge(10, 5)) == (
        "request body of 10 bytes exceeds the limit of 5 bytes"
    )
    assert str(errors.ModelNotFound("m", known=[])) == "unknown model 'm'; known models: (none)"
    assert str(errors.ModelNotFound("m", "2", ["1", "3"])) == (
        "unknown version '2' of model 'm'; available versions: 1, 3"
    )
    assert str(errors.ModelNotReady("m", "1", "LOADING", "warming up")) == (
        "model 'm' version '1' is not ready (state: LOADING): warming up"
    )
    assert str(errors.ConfigError("c.yaml", "f", "an integer", "x")) == (
        "c.yaml: field 'f': expected an integer, got 'x'"
    )


def test_a_full_queue_tells_the_client_when_to_retry() -> None:
    from mserve.server.http.app import error_reply

    status, body, headers = error_reply(errors.ServerBusy("m", "1", 8, 8))
    assert status == 503
    assert (b"retry-after", b"1") in headers
    assert b"(max_queue_size 8); retry later" in body
    assert (b"retry-after", b"1") not in error_reply(errors.Unavailable("not ready"))[2]
