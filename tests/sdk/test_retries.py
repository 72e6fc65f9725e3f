"""The client's own retries against failing servers: what is retried, under which
Idempotency-Key, how long it waits, and when it stops. Sleeps are recorded, not slept."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from paycore_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncPaycore,
    ConflictError,
    IdempotencyError,
    InsufficientFundsError,
    InternalServerError,
    InvalidRequestError,
    Paycore,
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
)
from sdk.flaky import RESET, Answer, ResettingServer, Script, problem

ACCOUNT: dict[str, Any] = {
    "id": "alice", "currency": "USD", "code": 0,
    "flags": {"no_overdraft": False, "credit_limit": None, "history": False, "closed": False},
    "metadata": None, "timestamp": 1, "created_at": "2026-01-01T00:00:00.000000001Z",
    "balance": {"debits_posted": 0, "credits_posted": 0, "debits_pending": 0,
                "credits_pending": 0, "available": 0},
}  # fmt: skip
OK = Answer(201, ACCOUNT)


def _client(script: Script, delays: list[float], **options: Any) -> Paycore:
    return Paycore("pk_test", base_url="http://paycore.test", transport=script.transport(),
                   sleep=delays.append, **options)  # fmt: skip


def test_failures_are_retried_under_one_idempotency_key() -> None:
    """A reset, a 503, a 429 and a lost answer, then success: four retries, one key."""
    script = Script(
        httpx.ConnectError,
        problem(503, "store_unavailable", retry_after="1"),
        problem(429, "rate_limited", retry_after="2"),
        httpx.ReadError,
        OK,
    )
    delays: list[float] = []
    client = _client(script, delays, max_network_retries=4)
    account = client.accounts.create(currency="USD", id="alice")
    assert account.id == "alice"
    keys = {seen.idempotency_key for seen in script.seen}
    assert len(script.seen) == 5
    assert len(keys) == 1
    assert None not in keys
    assert len({seen.body for seen in script.seen}) == 1  # the same bytes every time
    assert len(delays) == 4


def test_retry_after_is_honoured() -> None:
    """The wait before a retry is at least the server's Retry-After."""
    script = Script(problem(429, "rate_limited", retry_after="7"), OK)
    delays: list[float] = []
    _client(script, delays).accounts.create(currency="USD")
    assert delays == [7.0]


def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    """A server asking for more than ``max_retry_after`` gets the error back at once."""
    script = Script(problem(503, "store_unavailable", retry_after="600"))
    delays: list[float] = []
    with pytest.raises(ServiceUnavailableError) as unavailable:
        _client(script, delays).accounts.retrieve("alice")
    assert unavailable.value.retry_after == 600.0
    assert delays == []


def test_retries_stop_at_max_network_retries() -> None:
    """With every attempt failing, the client tries 1 + max_network_retries times."""
    script = Script(*[problem(503, "store_unavailable")] * 4)
    delays: list[float] = []
    with pytest.raises(ServiceUnavailableError) as unavailable:
        _client(script, delays, max_network_retries=3).transfers.retrieve("t1")
    assert len(script.seen) == 4
    assert len(delays) == 3
    assert unavailable.value.code == "store_unavailable"


def test_no_retry_when_max_network_retries_is_zero() -> None:
    """``max_network_retries=0``: the first failure is raised."""
    script = Script(httpx.ConnectError)
    with pytest.raises(APIConnectionError):
        _client(script, [], max_network_retries=0).accounts.retrieve("alice")
    assert len(script.seen) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(422, "invalid_request"), InvalidRequestError),
        (problem(409, "insufficient_funds"), InsufficientFundsError),
        (problem(409, "idempotency_key_reused"), IdempotencyError),
        (problem(409, "transfer_exists_with_different_fields"), ConflictError),
        (problem(500, "internal_error"), InternalServerError),
    ],
)
def test_a_definite_answer_is_not_retried(answer: Answer, error: type[Exception]) -> None:
    """4xx (but the in-flight codes) and 500 are raised after one attempt."""
    script = Script(answer, OK)
    delays: list[float] = []
    with pytest.raises(error):
        _client(script, delays).accounts.create(currency="USD")
    assert len(script.seen) == 1
    assert delays == []


@pytest.mark.parametrize("code", ["idempotency_key_in_use", "transfer_in_flight"])
def test_a_request_still_in_flight_on_the_server_is_retried(code: str) -> None:
    """409 in_use / in_flight are the server saying 'not yet': retried, same key."""
    script = Script(problem(409, code), OK)
    client = _client(script, [])
    client.accounts.create(currency="USD", id="alice")
    assert len(script.seen) == 2
    assert script.seen[0].idempotency_key == script.seen[1].idempotency_key


@pytest.mark.parametrize("status", [502, 504])
def test_a_proxy_without_its_upstream_is_retried(status: int) -> None:
    """502 and 504 from a proxy (HTML, no paycore code) are retried."""
    script = Script(Answer(status, {"html": "bad gateway"}), OK)
    _client(script, []).accounts.retrieve("alice")
    assert len(script.seen) == 2


def test_a_timeout_is_retried_then_raised_as_api_timeout() -> None:
    """Timeouts are retried (the key makes that safe), then raised as APITimeoutError."""
    script = Script(httpx.ReadTimeout, httpx.ReadTimeout, httpx.ReadTimeout)
    with pytest.raises(APITimeoutError):
        _client(script, []).payments.capture("pay_1", amount=100)
    assert len({s.idempotency_key for s in script.seen}) == 1
    assert len(script.seen) == 3


def test_the_callers_key_is_sent_and_gets_carry_none() -> None:
    """A key given by the caller is the one sent; a GET sends none."""
    script = Script(OK, OK)
    client = _client(script, [])
    client.accounts.create(currency="USD", idempotency_key="order-42")
    client.accounts.retrieve("alice")
    assert [s.idempotency_key for s in script.seen] == ["order-42", None]


def test_each_call_gets_its_own_key() -> None:
    """Two calls with the same body are two requests: two keys."""
    script = Script(OK, OK)
    client = _client(script, [])
    client.accounts.create(currency="USD")
    client.accounts.create(currency="USD")
    assert script.seen[0].idempotency_key != script.seen[1].idempotency_key


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    """Retry n waits between half and all of min(max_delay, initial * 2^n)."""
    policy = RetryPolicy(max_network_retries=10, initial_delay=0.5, max_delay=4.0,
                         rng=random.Random(3))  # fmt: skip
    for n in range(8):
        base = min(4.0, 0.5 * 2**n)
        for _ in range(50):
            assert base / 2 <= policy.backoff(n) <= base
    assert policy.delay_after(10, None) is None


def test_resets_from_a_real_socket_are_retried_with_one_key() -> None:
    """Connections cut with an RST (twice), a 503, then an answer: one key throughout."""
    server = ResettingServer(RESET, RESET, problem(503, "lock_unavailable", retry_after="1"), OK)
    delays: list[float] = []
    with server.running(), Paycore("pk_test", base_url=server.base_url, sleep=delays.append,
                                   max_network_retries=3) as client:  # fmt: skip
        account = client.accounts.create(currency="USD", id="alice")
    assert account.balance.available == 0
    assert [s.path for s in server.seen] == ["/v1/accounts"] * 4
    assert len({s.idempotency_key for s in server.seen}) == 1
    assert delays[2] >= 1.0


async def test_the_async_client_retries_the_same_way() -> None:
    """AsyncPaycore: reset, 429, then success; one key; the Retry-After waited."""
    script = Script(httpx.ConnectError, problem(429, "rate_limited", retry_after="3"), OK)
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    transport = script.transport()
    async with AsyncPaycore("pk_test", base_url="http://paycore.test", transport=transport,
                            sleep=sleep) as client:  # fmt: skip
        account = await client.accounts.create(currency="USD")
    assert account.id == "alice"
    assert len(script.seen) == 3
    assert len({s.idempotency_key for s in script.seen}) == 1
    assert delays[1] == 3.0


async def test_the_async_client_stops_at_max_network_retries() -> None:
    """AsyncPaycore raises the last error after 1 + max_network_retries attempts."""
    script = Script(*[problem(429, "rate_limited", retry_after="1")] * 3)
    client = AsyncPaycore("pk_test", base_url="http://paycore.test",
                          transport=script.transport(), sleep=_no_wait)  # fmt: skip
    async with client:
        with pytest.raises(RateLimitError) as limited:
            await client.accounts.retrieve("alice")
    assert limited.value.retry_after == 1.0
    assert len(script.seen) == 3


async def test_the_async_client_on_a_real_socket_that_resets() -> None:
    """AsyncPaycore over real sockets: an RST, then the answer; the key reused."""
    server = ResettingServer(RESET, OK)
    async with AsyncPaycore("pk_test", base_url=server.base_url, sleep=_no_wait) as client:
        with server.running():
            await client.accounts.create(currency="USD")
    assert len(server.seen) == 2
    assert server.seen[0].idempotency_key == server.seen[1].idempotency_key


async def _no_wait(seconds: float) -> None:
    del seconds
