"""The one table that maps mserve's errors to process exit codes."""

from __future__ import annotations

from mserve import errors

OK = 0
FAILURE = 1  # the job ran and its outcome is a failure (e.g. a model that does not load)
USAGE = 2  # bad command line (argparse uses 2 as well)
CONFIG = 3  # a config or repository problem
NOT_FOUND = 4  # an unknown model, file or endpoint
UNAVAILABLE = 5  # the target cannot be reached or is not ready
PARITY = 6  # a conversion ran but its result does not compute the original's function
INTERRUPTED = 130

_TABLE: tuple[tuple[type[errors.MserveError], int], ...] = (
    (errors.ParityError, PARITY),
    (errors.UntrustedSource, USAGE),  # refused until the command line says --trust
    (errors.ConfigError, CONFIG),
    (errors.RepositoryError, CONFIG),
    (errors.NotFound, NOT_FOUND),
    (errors.Unavailable, UNAVAILABLE),
    (errors.InvalidRequest, USAGE),
)


def exit_code_of(exc: errors.MserveError) -> int:
    """The exit code for an error."""
    for cls, code in _TABLE:
        if isinstance(exc, cls):
            return code
    return FAILURE
