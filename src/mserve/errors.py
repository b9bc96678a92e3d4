"""The one exception tree of mserve.

Every error a user can meet is one of these. Each builds its message from typed fields, so the
message always says what was wrong and what was expected. Transports (HTTP, gRPC) and the CLI map
the classes below to their own codes with one table each; nothing here knows about them.

    MserveError
    ├── InvalidRequest            the caller sent something the server cannot accept
    │   ├── MalformedRequest          not parseable (bad JSON, lying binary header, ...)
    │   ├── InvalidInput              a tensor's name, datatype, shape or data is wrong
    │   ├── PayloadTooLarge           a body or tensor over the configured limit
    │   ├── HeadersTooLarge           a request line and headers over the configured limit
    │   └── Unsupported               a method this model cannot answer (TF Serving's :classify)
    ├── NotFound                  the thing named does not exist
    │   ├── ModelNotFound             unknown model, or unknown version of a known model
    │   └── RouteNotFound             no such endpoint
    ├── Unavailable               exists, but cannot answer now
    │   ├── ModelNotReady             known but not loaded (loading, unloaded, failed)
    │   ├── ServerBusy                a bounded queue is full; retry after a moment
    │   └── TooManyConnections        the server holds as many connections as allowed
    ├── Unauthenticated           no API key, or one the server does not know
    ├── Forbidden                 a known key without the scope, or an API that is off
    ├── DeadlineExceeded          its deadline passed before it was computed
    │   └── ExecutionTimeout          its execution ran past the model's timeout and was stopped
    ├── ModelFailure              the model itself raised while computing
    ├── ConfigError               a config file or field is wrong (names file, field, expectation)
    ├── RepositoryError           a model directory cannot be turned into a loadable model
    └── ConversionError           a model cannot be converted (names the source and the problem)
        ├── UntrustedSource           a pickle-based file, refused without an explicit trust flag
        └── ParityError               the converted model computes something else (with figures)
"""

from __future__ import annotations


class MserveError(Exception):
    """Base of every error mserve raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(MserveError):
    """The request cannot be accepted as sent."""


class MalformedRequest(InvalidRequest):
    """The request body or headers cannot be parsed."""


class InvalidInput(InvalidRequest):
    """A tensor in the request does not match what the model expects."""

    def __init__(self, model: str, tensor: str, problem: str) -> None:
        super().__init__(f"model '{model}', input '{tensor}': {problem}")
        self.model = model
        self.tensor = tensor
        self.problem = problem


class PayloadTooLarge(InvalidRequest):
    """A request body exceeds the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class HeadersTooLarge(InvalidRequest):
    """The request line and headers exceed the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"request line and headers of more than {size} bytes exceed the limit of {limit} "
            "bytes (--max-header-kb)"
        )
        self.size = size
        self.limit = limit


class Unsupported(InvalidRequest):
    """The model cannot answer this method (a TF Serving :classify on a model that does not
    classify); the message says why and what the model can do."""


class NotFound(MserveError):
    """The named resource does not exist."""


class ModelNotFound(NotFound):
    """No such model, or no such version of it."""

    def __init__(self, name: str, version: str | None = None, known: list[str] | None = None):
        if version is None:
            msg = f"unknown model '{name}'"
            if known is not None:
                msg += f"; known models: {', '.join(known) if known else '(none)'}"
        else:
            msg = f"unknown version '{version}' of model '{name}'"
            if known is not None:
                msg += f"; available versions: {', '.join(known) if known else '(none)'}"
        super().__init__(msg)
        self.name = name
        self.version = version


class RouteNotFound(NotFound):
    """No endpoint answers this method and path."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"no route for {method} {path}")
        self.method = method
        self.path = path


class Unavailable(MserveError):
    """The resource exists but cannot answer now."""


class ModelNotReady(Unavailable):
    """The model is known but not loaded."""

    def __init__(self, name: str, version: str | None, state: str, reason: str = "") -> None:
        what = f"model '{name}'" + (f" version '{version}'" if version else "")
        msg = f"{what} is not ready (state: {state})"
        if reason:
            msg += f": {reason}"
        super().__init__(msg)
        self.name = name
        self.version = version
        self.state = state
        self.reason = reason


class ServerBusy(Unavailable):
    """A bounded queue is full: the request is refused at once rather than queued."""

    def __init__(self, name: str, version: str, queued: int, limit: int) -> None:
        super().__init__(
            f"model '{name}' version '{version}' is overloaded: {queued} requests are waiting "
            f"(max_queue_size {limit}); retry later"
        )
        self.name = name
        self.version = version
        self.retry_after_s = 1


class Unauthenticated(MserveError):
    """The request carries no API key, or one the server does not know."""


class Forbidden(MserveError):
    """The key is known but lacks the scope, or the API is turned off."""


class TooManyConnections(Unavailable):
    """The server holds as many connections as it is allowed; this one is closed at once."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the server has {limit} open connections, its limit (--max-connections); "
            "retry later or reuse a connection"
        )
        self.limit = limit


class DeadlineExceeded(MserveError):
    """A request's deadline (the queue's timeout, or the client's) passed before it was
    computed; it was dropped uncomputed."""

    def __init__(
        self, name: str, version: str, waited_us: int, timeout_us: int, whose: str = "queue"
    ) -> None:
        what = f"model '{name}'" + (f" version '{version}'" if version else "")
        if whose == "queue":
            msg = (
                f"{what}: request timed out after waiting {waited_us} us in the queue "
                f"(timeout {timeout_us} us); it was not computed"
            )
        elif timeout_us <= 0:
            msg = f"{what}: the request's deadline had passed when it arrived; it was not computed"
        else:
            msg = (
                f"{what}: the request's deadline passed after {waited_us} us in the server "
                f"(its timeout: {timeout_us} us); it was not computed"
            )
        super().__init__(msg)
        self.name = name
        self.version = version
        self.waited_us = waited_us
        self.timeout_us = timeout_us


class ExecutionTimeout(DeadlineExceeded):
    """An execution ran longer than its model's ``runtime.timeout_s``: its request(s) are
    answered with this, and ``outcome`` says what became of the run (cancelled, or its instance
    process killed and restarted)."""

    def __init__(self, name: str, version: str, timeout_s: float, outcome: str) -> None:
        MserveError.__init__(
            self,
            f"model '{name}' version '{version}': execution exceeded its timeout of "
            f"{timeout_s:g} s; {outcome}",
        )
        self.name = name
        self.version = version
        self.timeout_s = timeout_s
        self.outcome = outcome
        self.waited_us = self.timeout_us = round(timeout_s * 1e6)


class ModelFailure(MserveError):
    """The model raised while computing a request."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model '{name}' version '{version}' failed: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class ConfigError(MserveError):
    """A configuration value is wrong; the message names the file, the field and the expectation."""

    def __init__(self, source: str, field: str, expected: str, got: object = None) -> None:
        msg = f"{source}: field '{field}': expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        super().__init__(msg)
        self.source = source
        self.field = field
        self.expected = expected
        self.got = got


class RepositoryError(MserveError):
    """A model directory cannot be turned into a loadable model."""

    def __init__(self, path: str | None, problem: str) -> None:
        super().__init__(problem if path is None else f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ConversionError(MserveError):
    """A trained model cannot be turned into a verified ONNX model."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class UntrustedSource(ConversionError):
    """A file whose loading runs arbitrary code (pickle, joblib), refused unless trusted."""

    def __init__(self, source: str, kind: str, flag: str = "--trust") -> None:
        super().__init__(
            source,
            f"{kind} files run arbitrary code when they are loaded, so they are refused by "
            f"default; pass {flag} only if you made this file or trust who did",
        )
        self.kind = kind


class ParityError(ConversionError):
    """The converted model's outputs differ from the original's beyond the tolerance."""

    def __init__(self, source: str, variant: str, figures: str, tolerance: str) -> None:
        super().__init__(
            source,
            f"variant '{variant}' does not compute the same function: {figures} "
            f"(tolerance: {tolerance})",
        )
        self.variant = variant
        self.figures = figures
        self.tolerance = tolerance
