"""The SDK's error classes cover paycore's codes, and its retries match what the server
calls retryable."""

from __future__ import annotations

import msgspec
import pytest

from paycore.errors import ERROR_SPECS, ErrorCode
from paycore_client import (
    APIError,
    AuthenticationError,
    ConflictError,
    InternalServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from paycore_client._errors import CODE_FAMILIES, error_from_response
from paycore_client._retry import is_retryable_answer

# The status every code of a family is sent with (InsufficientFundsError, IdempotencyError
# and PaymentDeclinedError are checked through their parents' or by code below).
_FAMILY_STATUSES: dict[type[APIError], set[int]] = {
    InvalidRequestError: {405, 413, 415, 422},
    AuthenticationError: {401},
    PermissionDeniedError: {403},
    NotFoundError: {404},
    ConflictError: {409},
    RateLimitError: {429},
    ServiceUnavailableError: {503},
    InternalServerError: {500},
}


def test_every_server_code_has_a_family_and_no_family_names_a_stale_code() -> None:
    """Each ``paycore.errors.ErrorCode`` is mapped, and the map holds nothing else."""
    assert set(CODE_FAMILIES) == {code.value for code in ErrorCode}


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_each_code_is_raised_as_its_family(code: ErrorCode) -> None:
    """A problem answer of ``code`` raises its family, with code, status and body."""
    spec = ERROR_SPECS[code]
    body = msgspec.json.encode({"type": "x", "title": spec.title, "status": spec.status,
                                "detail": "why", "code": code.value})  # fmt: skip
    error = error_from_response(spec.status, {"retry-after": "2"}, body)
    assert type(error) is CODE_FAMILIES[code.value]
    assert (error.code, error.status, error.detail, error.body) == (code.value, spec.status,
                                                                    "why", body)  # fmt: skip
    for family, statuses in _FAMILY_STATUSES.items():
        if type(error) is family:
            assert spec.status in statuses


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_the_client_retries_what_the_server_calls_retryable(code: ErrorCode) -> None:
    """Retryable codes are retried; ``internal_error`` is the one exception: a 500 is an
    unexpected failure, likely to repeat, which the client shows at once (``_retry``)."""
    spec = ERROR_SPECS[code]
    expected = spec.retryable and code is not ErrorCode.INTERNAL_ERROR
    assert is_retryable_answer(spec.status, code.value) == expected


@pytest.mark.parametrize(
    ("status", "family"),
    [(400, InvalidRequestError), (404, NotFoundError), (409, ConflictError),
     (429, RateLimitError), (502, InternalServerError), (503, ServiceUnavailableError)],
)  # fmt: skip
def test_an_unknown_code_or_a_foreign_body_falls_back_on_the_status(
    status: int, family: type[APIError]
) -> None:
    """A newer server's code, or a proxy's HTML page, still gets a family by status."""
    newer = error_from_response(status, {}, b'{"code": "brand_new_code", "detail": "d"}')
    assert type(newer) is family
    assert newer.code == "brand_new_code"
    foreign = error_from_response(status, {}, b"<html>Bad Gateway</html>")
    assert type(foreign) is family
    assert foreign.code is None
    assert "Bad Gateway" in foreign.detail
