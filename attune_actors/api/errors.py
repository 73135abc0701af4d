"""Every failure of an HTTP request as `{"error": {"code", "message"}}` with the status of its code.

The codes and statuses are the NATS control service's (`attune_actors.errors.ERROR_STATUS`), plus
the few only HTTP has (401, 405, 415). Engine errors keep their one-line message; a request the
models refuse names the field; anything else is a bug: 500 `internal`, the traceback in the log
(`attune_actors.api.guard`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from attune_actors.api.responses import JSONResponse
from attune_actors.errors import ERROR_STATUS, AttuneError, ValidationError, error_code


class ApiError(Exception):
    """A request refused at the door (auth, size, media type, a bad field), before the engine is asked."""

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers


def error_response(code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return JSONResponse(body, status_code=ERROR_STATUS.get(code, 500), headers=headers)


def _attune_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AttuneError)
    if isinstance(exc, ValidationError):
        return error_response("validation_failed", str(exc), errors=[str(e) for e in exc.errors])
    return error_response(error_code(exc), str(exc))


def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.code, exc.message, exc.headers)


def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg")))
    return error_response("bad_request", "; ".join(problems) or "invalid request")


_HTTP_CODES = {
    401: "unauthenticated",
    403: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals: no such route, a method the route does not take."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    response = error_response(code, message, dict(exc.headers) if exc.headers else None)
    response.status_code = exc.status_code
    return response


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into error documents."""
    app.add_exception_handler(AttuneError, _attune_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)


__all__ = ["ApiError", "error_response", "install"]
