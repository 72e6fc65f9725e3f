"""Error codes: every code is presented, and the exception tree carries code, status, retry."""

from __future__ import annotations

import re

import pytest

from paycore.errors import (
    ERROR_SPECS,
    ErrorCode,
    IdempotencyError,
    PaycoreError,
    RequestError,
    UnavailableError,
)


def test_every_code_has_a_spec() -> None:
    """Each ErrorCode maps to an HTTP status and a title; no code is left unpresented."""
    assert set(ERROR_SPECS) == set(ErrorCode)
    for code, spec in ERROR_SPECS.items():
        assert 400 <= spec.status < 600, code
        assert spec.title, code


def test_codes_are_stable_snake_case() -> None:
    """Code values are lower snake_case and unique, as the API contract promises."""
    values = [c.value for c in ErrorCode]
    assert len(values) == len(set(values))
    for value in values:
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", value), value


def test_only_transient_failures_are_retryable() -> None:
    """A retry may help only for an unavailable store, lock service, payment processor or
    exchange rate source,
    an in-flight key or cross-shard hold, a webhook event still on its retry schedule, an
    import of the same processor's reports, a caller over its rate limit (after
    Retry-After) or an internal error."""
    retryable = {code for code, spec in ERROR_SPECS.items() if spec.retryable}
    assert retryable == {
        ErrorCode.STORE_UNAVAILABLE,
        ErrorCode.LOCK_UNAVAILABLE,
        ErrorCode.PROCESSOR_UNAVAILABLE,
        ErrorCode.FX_RATE_UNAVAILABLE,
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        ErrorCode.TRANSFER_IN_FLIGHT,
        ErrorCode.WEBHOOK_DELIVERY_IN_PROGRESS,
        ErrorCode.IMPORT_IN_PROGRESS,
        ErrorCode.RATE_LIMITED,
        ErrorCode.INTERNAL_ERROR,
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.INVALID_REQUEST, 422),
        (ErrorCode.ACCOUNT_NOT_FOUND, 404),
        (ErrorCode.PENDING_TRANSFER_NOT_FOUND, 404),
        (ErrorCode.INSUFFICIENT_FUNDS, 409),
        (ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS, 409),
        (ErrorCode.IDEMPOTENCY_KEY_REUSED, 409),
        (ErrorCode.STORE_UNAVAILABLE, 503),
        (ErrorCode.INTERNAL_ERROR, 500),
    ],
)
def test_statuses_follow_the_contract(code: ErrorCode, status: int) -> None:
    """Invalid input is 422, missing things 404, conflicts 409, an unavailable store 503."""
    assert ERROR_SPECS[code].status == status


def test_an_error_carries_its_code_status_and_detail() -> None:
    """A PaycoreError exposes code, status, retryable and a detail defaulting to the title."""
    err = RequestError(ErrorCode.ACCOUNT_NOT_FOUND)
    assert (err.code, err.status, err.retryable) == (ErrorCode.ACCOUNT_NOT_FOUND, 404, False)
    assert err.detail == ERROR_SPECS[ErrorCode.ACCOUNT_NOT_FOUND].title
    assert str(err) == err.detail
    assert PaycoreError(ErrorCode.OVERFLOW, "counter full").detail == "counter full"


def test_unavailable_is_a_retryable_503_with_retry_after() -> None:
    """UnavailableError is a store_unavailable 503 that tells clients when to retry."""
    err = UnavailableError("shard-0 is down", retry_after=7)
    assert (err.code, err.status, err.retryable, err.retry_after) == (
        ErrorCode.STORE_UNAVAILABLE,
        503,
        True,
        7,
    )
    assert err.detail == "shard-0 is down"
    assert UnavailableError("x").retry_after == 1


def test_the_hierarchy_has_one_root() -> None:
    """Every paycore error is a PaycoreError; an idempotency error is a request error."""
    assert issubclass(IdempotencyError, RequestError)
    assert issubclass(RequestError, PaycoreError)
    assert issubclass(UnavailableError, PaycoreError)
    assert not issubclass(UnavailableError, RequestError)
