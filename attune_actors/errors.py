"""One exception hierarchy for everything attune_actors raises on purpose.

Callers catch what they mean: `AttuneError` for any of ours, a subclass for one kind. Every error
renders as one line (`str(err)`) that says what and where, which is what the CLI prints; user errors
never need a traceback to be understood.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file, 1-based, as editors and `FILE:LINE:COLUMN` tools expect."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


class AttuneError(Exception):
    """Base class of every error attune_actors raises deliberately."""

    def __init__(self, message: str, *, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        if self.location is not None:
            return f"{self.location}: {self.message}"
        return self.message


class ConfigError(AttuneError):
    """The settings (file, environment or flags) are invalid."""


class ValidationError(AttuneError):
    """A pack, action or workflow definition is invalid.

    `errors` holds every problem found (each a located `AttuneError`), so a user fixes them all in one
    pass; `str()` lists them one per line.
    """

    def __init__(self, errors: list[AttuneError] | AttuneError | str) -> None:
        if isinstance(errors, str):
            errors = [AttuneError(errors)]
        elif isinstance(errors, AttuneError):
            errors = [errors]
        self.errors: list[AttuneError] = list(errors)
        first = self.errors[0] if self.errors else AttuneError("invalid definition")
        super().__init__(first.message, location=first.location)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class NotFoundError(AttuneError):
    """A workflow, action, execution or inquiry that does not exist was named."""


class ParameterError(AttuneError):
    """Input parameters are missing, of the wrong type or outside their enum."""


class TemplateError(AttuneError):
    """A template failed to compile or render (syntax error, undefined name, sandbox refusal)."""


class InquiryResponseError(AttuneError):
    """A response to an inquiry was refused (schema violation, identity not allowed, not pending)."""


class ActionError(AttuneError):
    """An action run failed; the message is what the action reported.

    Runners raise it with the partial `result` (a command's stdout and exit code, an HTTP response)
    so the task run keeps what the action produced even when it failed.
    """

    def __init__(self, message: str, *, result: object = None, location: Location | None = None) -> None:
        super().__init__(message, location=location)
        self.result = result


class StoreError(AttuneError):
    """The data directory or store cannot be used (corrupt, newer schema, locked)."""


class TransportError(AttuneError):
    """A transport (in-process or NATS) cannot deliver a message."""


class AuthError(AttuneError):
    """Credentials are missing or do not allow the requested operation."""


class EngineClosedError(AttuneError):
    """The engine was used before `start()` or after `close()`."""


class ConflictError(ParameterError):
    """The request conflicts with the execution's state: another live process runs it, it is still
    running (rerun), or it has ended (control). A subclass of ParameterError, so front ends that do
    not map it yet answer as for invalid input."""


# Stable error codes of every front end (NATS control service, HTTP API) -> their HTTP status (on NATS,
# the `Nats-Service-Error-Code` header). docs/distributed.md and docs/http.md list them.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,  # not JSON, not an object, missing/unknown/mistyped field, no reply subject
    "invalid_parameters": 400,  # ParameterError: workflow parameters, rerun of a running execution, ...
    "unauthenticated": 401,  # HTTP: no bearer token, or one that is not configured
    "unauthorized": 403,  # AuthError; HTTP: the token's role may not do this
    "not_found": 404,  # NotFoundError: no such execution, inquiry, workflow, action or pack
    "method_not_allowed": 405,  # HTTP: the path exists, not with this method
    "inquiry_refused": 409,  # InquiryResponseError: schema violation, identity not allowed, not pending
    "too_large": 413,  # a request over max_payload / limits.request_bytes, or a reply over max_payload
    "unsupported_media_type": 415,  # HTTP: a body in a type the route does not read
    "validation_failed": 422,  # ValidationError: a workflow definition is invalid
    "template_error": 422,  # TemplateError
    "action_failed": 422,  # ActionError
    "config_error": 500,  # ConfigError
    "store_error": 503,  # StoreError
    "transport_error": 503,  # TransportError
    "unavailable": 503,  # EngineClosedError: the engine is stopping
    "error": 500,  # any other AttuneError
    "internal": 500,  # a bug: the message says so, the traceback is in the engine's log
}

_ERROR_CODES: tuple[tuple[type[AttuneError], str], ...] = (
    (NotFoundError, "not_found"),
    (ParameterError, "invalid_parameters"),
    (ValidationError, "validation_failed"),
    (InquiryResponseError, "inquiry_refused"),
    (TemplateError, "template_error"),
    (ActionError, "action_failed"),
    (ConfigError, "config_error"),
    (AuthError, "unauthorized"),
    (StoreError, "store_error"),
    (TransportError, "transport_error"),
    (EngineClosedError, "unavailable"),
)


class RoutedError(AttuneError):
    """The error another engine of a cluster replied with to a request routed to it (or the lack of
    a reply): its code is kept, so every front end answers as that engine did."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code if code in ERROR_STATUS else "error"


def error_code(exc: AttuneError) -> str:
    """The stable error code of one of our exceptions (its class, or the nearest mapped base)."""
    if isinstance(exc, RoutedError):
        return exc.code
    return next((code for cls, code in _ERROR_CODES if isinstance(exc, cls)), "error")
