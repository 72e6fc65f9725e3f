"""Every error answer is RFC 9457 ``application/problem+json`` with a stable ``code``.

This is the one boundary where exceptions become HTTP: paycore's own errors carry
their code; Litestar's (no route, wrong method, body too large, bad query
parameter) are mapped to the matching code; a client that left before sending its whole
body gets a bare 499 (``bodies.ClientDisconnected``: logged in one line, no traceback);
anything else is a logged 500 ``internal_error`` that reveals nothing of the cause to
the client.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from paycore.api.bodies import CLIENT_CLOSED_REQUEST, ClientDisconnected
from paycore.api.schemas import Problem, encode
from paycore.api.tenancy import caller_detail
from paycore.errors import ERROR_SPECS, ErrorCode, PaycoreError, UnavailableError
from paycore.storage.base import StoredResponse

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE_BASE",
    "code_of_http_exception",
    "problem",
    "problem_response",
    "status_of",
]

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://paycore.dev/problems/"

_HTTP_STATUS_CODES: Final[dict[int, ErrorCode]] = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
}


def problem(code: ErrorCode, detail: str = "") -> StoredResponse:
    """The problem+json answer for ``code``; also what an idempotent write stores."""
    spec = ERROR_SPECS[code]
    body = Problem(
        type=PROBLEM_TYPE_BASE + code.value,
        title=spec.title,
        status=spec.status,
        detail=detail or spec.title,
        code=code,
    )
    return StoredResponse(spec.status, encode(body), PROBLEM_CONTENT_TYPE)


def problem_response(
    code: ErrorCode, detail: str = "", headers: dict[str, str] | None = None
) -> Response[bytes]:
    answer = problem(code, detail)
    return Response(
        answer.body,
        status_code=answer.status,
        media_type=answer.content_type,
        headers=headers,
    )


def code_of_http_exception(exc: HTTPException) -> ErrorCode:
    """Litestar's own refusals, as paycore codes; every other 4xx is invalid input."""
    if isinstance(exc, ValidationException):
        return ErrorCode.INVALID_REQUEST
    code = _HTTP_STATUS_CODES.get(exc.status_code)
    if code is not None:
        return code
    return ErrorCode.INVALID_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR


def status_of(exc: BaseException) -> int:
    """The HTTP status the handlers below give ``exc`` (for metrics of failed requests)."""
    if isinstance(exc, PaycoreError):
        return exc.status
    if isinstance(exc, ClientDisconnected):
        return CLIENT_CLOSED_REQUEST
    if isinstance(exc, HTTPException):
        return ERROR_SPECS[code_of_http_exception(exc)].status
    return 500


def _handle_paycore_error(request: Request[Any, Any, Any], exc: PaycoreError) -> Response[bytes]:
    if exc.code is ErrorCode.INTERNAL_ERROR:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail, exc_info=exc)
        return problem_response(ErrorCode.INTERNAL_ERROR)
    headers = None
    # Raised details name ids as the store keeps them; the caller knows its own without
    # its namespace's prefix (``paycore.api.tenancy``).
    detail = caller_detail(request, exc.detail)
    if isinstance(exc, UnavailableError):
        headers = {"Retry-After": str(exc.retry_after)}
    elif exc.code is ErrorCode.UNAUTHORIZED:  # RFC 6750: say which scheme is wanted
        headers = {"WWW-Authenticate": 'Bearer realm="paycore"'}
    return problem_response(exc.code, detail, headers)


def _handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    code = code_of_http_exception(exc)
    if code is ErrorCode.INTERNAL_ERROR:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(code)
    detail = exc.detail
    if code is ErrorCode.NOT_FOUND:
        detail = f"no resource at {request.url.path}"
    elif code is ErrorCode.METHOD_NOT_ALLOWED:
        detail = f"{request.method} is not allowed on {request.url.path}"
    extra = exc.extra if isinstance(exc, ValidationException) else None
    if isinstance(extra, list):  # Litestar lists each bad parameter with its message
        detail = (
            "; ".join(
                f"{item.get('key', '?')}: {item.get('message', '')}"
                for item in extra
                if isinstance(item, dict)
            )
            or detail
        )
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return problem_response(code, detail, headers or None)


def _handle_client_disconnected(
    request: Request[Any, Any, Any], exc: ClientDisconnected
) -> Response[bytes]:
    # Nothing of ours failed and nothing was done: the answer goes to no one.
    log.info("%s %s: the client left before sending its whole body", request.method,
             request.url.path)  # fmt: skip
    return Response(b"", status_code=CLIENT_CLOSED_REQUEST)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("%s %s raised unexpectedly", request.method, request.url.path, exc_info=exc)
    return problem_response(ErrorCode.INTERNAL_ERROR)


EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    PaycoreError: _handle_paycore_error,
    HTTPException: _handle_http_exception,
    ClientDisconnected: _handle_client_disconnected,
    Exception: _handle_unexpected,
}
