"""The simulator in real processes, through ``SimulatorConnector``: cards, idempotency,
captures, refunds, timeouts, outages, latency, side-by-side simulators, and logs."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from paycore.payments.processors.base import (
    AuthorizeRequest,
    CardDetails,
    Outcome,
    PayoutRequest,
    ProcessorResult,
)
from paycore.payments.processors.http_connector import SimulatorConnector
from paycore.payments.processors.simulator import TEST_CARDS
from paycore.payments.processors.simulator.process import SimulatorProcess
from payments.fix_acquirer import AcquirerFactory, AcquirerPool, new_ref

pytestmark = pytest.mark.slow

YEAR = datetime.now(UTC).year + 3
OK_CARD = "4242424242424242"
TIMEOUT_CARD = "4000000000007775"
SELECTIVE_CARD = "4000000000003337"

Connect = Callable[..., SimulatorConnector]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Makes connectors (``connect(acquirer, timeout=...)``), closed after the test."""
    made: list[SimulatorConnector] = []

    def make(url: str, **options: Any) -> SimulatorConnector:
        connector = SimulatorConnector(getattr(url, "name", "acq"), url, **options)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        await connector.aclose()


def card(
    number: str = OK_CARD, *, exp: tuple[int, int] = (12, YEAR), cvc: str = "123"
) -> CardDetails:
    return CardDetails(number=number, exp_month=exp[0], exp_year=exp[1], cvc=cvc)


def auth(
    number: str = OK_CARD, *, amount: int = 1000, capture: bool = False, ref: str | None = None
) -> AuthorizeRequest:
    cvc = "1234" if number.startswith("37") else "123"
    return AuthorizeRequest(
        reference=ref or new_ref("au"),
        amount=amount,
        currency="EUR",
        card=card(number, cvc=cvc),
        capture=capture,
    )


def outcome(result: ProcessorResult) -> tuple[Outcome, str | None]:
    return result.outcome, result.decline_code


EXPECTED = {
    "4242424242424242": (Outcome.APPROVED, None),
    "5555555555554444": (Outcome.APPROVED, None),
    "378282246310005": (Outcome.APPROVED, None),
    "4000000000009995": (Outcome.DECLINED, "insufficient_funds"),
    "4000000000000002": (Outcome.DECLINED, "do_not_honor"),
    "4000000000009979": (Outcome.DECLINED, "stolen_card"),
    "4000000000000119": (Outcome.FAILED, None),
    "4000000000007775": (Outcome.AMBIGUOUS, None),
    "4000000000003337": (Outcome.APPROVED, None),
}


async def test_every_test_card(acquirer: AcquirerFactory, connect: Connect) -> None:
    """Each test card gives its documented outcome through the connector."""
    assert set(EXPECTED) == set(TEST_CARDS)
    connector = connect(acquirer(hang_seconds=10), timeout=0.5)
    requests = {number: auth(number) for number in EXPECTED}
    results = await asyncio.gather(*(connector.authorize(r) for r in requests.values()))
    got = {number: outcome(result) for number, result in zip(requests, results, strict=True)}
    assert got == EXPECTED
    approved = results[0]
    assert (approved.status, approved.amount) == ("authorized", 1000)
    assert approved.processor_reference
    assert results[-2].error is not None  # the timeout card: a read timeout
    assert "ReadTimeout" in results[-2].error


@pytest.mark.parametrize(
    ("details", "code"),
    [
        (card("4242424242424241"), "invalid_card"),
        (card(exp=(1, 2020)), "expired_card"),
        (card(exp=(13, YEAR)), "invalid_expiry"),
        (card(cvc="12"), "invalid_cvc"),
    ],
)
async def test_bad_cards_are_declined(
    acquirer: AcquirerFactory, connect: Connect, details: CardDetails, code: str
) -> None:
    """A card failing Luhn, expired or malformed is declined with its own code."""
    connector = connect(acquirer())
    request = AuthorizeRequest(reference=new_ref(), amount=100, currency="EUR", card=details)
    assert outcome(await connector.authorize(request)) == (Outcome.DECLINED, code)


async def test_authorize_is_idempotent_by_reference(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """Repeats (concurrent ones too) get the first answer; another body under it gets 409."""
    connector = connect(acquirer(latency={"kind": "fixed", "ms": 5, "jitter_ms": 20}))
    request = auth()
    results = await asyncio.gather(*(connector.authorize(request) for _ in range(8)))
    assert {r.processor_reference for r in results} == {results[0].processor_reference}
    assert {r.outcome for r in results} == {Outcome.APPROVED}
    other = AuthorizeRequest(
        reference=request.reference, amount=999, currency="EUR", card=request.card
    )
    assert outcome(await connector.authorize(other)) == (Outcome.DECLINED, "reference_reused")


async def test_partial_captures_up_to_the_amount(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """Several partial captures, each idempotent, add up to the authorized amount at most."""
    sim = acquirer()
    connector = connect(sim)
    request = auth(amount=1000)
    await connector.authorize(request)
    ref = request.reference
    first = await connector.capture(ref, 300, f"{ref}-c1")
    again = await connector.capture(ref, 300, f"{ref}-c1")
    assert (first.outcome, first.status, first.amount) == (Outcome.APPROVED, "captured", 300)
    assert again.processor_reference == first.processor_reference
    captures = await asyncio.gather(
        *(connector.capture(ref, 100, f"{ref}-k{i}") for i in range(10))
    )
    assert sum(r.outcome is Outcome.APPROVED for r in captures) == 7  # 300 + 7 * 100 = 1000
    assert {outcome(r) for r in captures if r.outcome is not Outcome.APPROVED} == {
        (Outcome.DECLINED, "amount_exceeds_authorized")
    }
    assert sim.operation(ref)["captured_amount"] == 1000
    status = await connector.status(f"{ref}-c1")
    assert (status.outcome, status.status, status.amount) == (Outcome.APPROVED, "captured", 300)


async def test_void_releases_the_rest(acquirer: AcquirerFactory, connect: Connect) -> None:
    """A void is idempotent and stops further captures; status then says voided."""
    connector = connect(acquirer())
    request = auth()
    await connector.authorize(request)
    voided = await connector.void(request.reference)
    assert (voided.outcome, voided.status) == (Outcome.APPROVED, "voided")
    assert (
        await connector.void(request.reference)
    ).processor_reference == voided.processor_reference
    late = await connector.capture(request.reference, 1, new_ref("cap"))
    assert outcome(late) == (Outcome.DECLINED, "authorization_voided")
    assert (await connector.status(request.reference)).status == "voided"
    unknown = await connector.void(new_ref())
    assert outcome(unknown) == (Outcome.DECLINED, "authorization_not_found")


async def test_refunds_never_exceed_the_captured_amount(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """Concurrent refunds never add up to more than was captured; repeats refund nothing."""
    sim = acquirer(latency={"kind": "fixed", "ms": 1, "jitter_ms": 10})
    connector = connect(sim)
    request = auth(amount=1000, capture=True)
    assert (await connector.authorize(request)).status == "captured"
    ref = request.reference
    first = await connector.refund(ref, 250, f"{ref}-r0")
    assert (first.outcome, first.status) == (Outcome.APPROVED, "refunded")
    assert (
        await connector.refund(ref, 250, f"{ref}-r0")
    ).processor_reference == first.processor_reference
    refunds = await asyncio.gather(
        *(connector.refund(ref, 300, f"{ref}-r{i}") for i in range(1, 9))
    )
    assert sum(r.outcome is Outcome.APPROVED for r in refunds) == 2  # 250 + 2 * 300 <= 1000
    assert {outcome(r) for r in refunds if r.outcome is not Outcome.APPROVED} == {
        (Outcome.DECLINED, "amount_exceeds_captured")
    }
    assert sim.operation(ref)["refunded_amount"] == 850
    reused = await connector.refund(ref, 1, f"{ref}-r0")
    assert outcome(reused) == (Outcome.DECLINED, "reference_reused")


async def test_payouts(acquirer: AcquirerFactory, connect: Connect) -> None:
    """Payouts are paid, declined, failed or ambiguous by destination; status resolves them."""
    connector = connect(acquirer(hang_seconds=10), timeout=0.5)

    def payout(destination: str) -> PayoutRequest:
        return PayoutRequest(
            reference=new_ref("po"), amount=700, currency="EUR", destination=destination
        )

    paid, closed, error, timeout = requests = [
        payout(d)
        for d in (
            "DE89370400440532013000",
            "GB00CLOSED00000000",
            "GB00ERROR000000000",
            "GB00TIMEOUT0000000",
        )
    ]
    results = await asyncio.gather(*(connector.payout(r) for r in requests))
    assert [outcome(r) for r in results] == [
        (Outcome.APPROVED, None),
        (Outcome.DECLINED, "account_closed"),
        (Outcome.FAILED, None),
        (Outcome.AMBIGUOUS, None),
    ]
    assert results[0].status == "paid_out"
    assert (await connector.status(timeout.reference)).status == "paid_out"
    assert (await connector.status(error.reference)).status == "not_found"
    assert (await connector.status(paid.reference)).amount == 700
    assert (await connector.status(closed.reference)).status == "declined"


async def test_timeout_card_is_ambiguous_then_status_shows_it_done(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """The timeout card times out (AMBIGUOUS), yet a status lookup finds it authorized,
    and a retry under the same reference times out again without a second authorization."""
    sim = acquirer(hang_seconds=10)
    connector = connect(sim, timeout=0.3)
    request = auth(TIMEOUT_CARD, amount=4200)
    first = await connector.authorize(request)
    assert first.outcome is Outcome.AMBIGUOUS
    assert first.latency_ms >= 250
    status = await connector.status(request.reference)
    assert (status.outcome, status.status, status.amount) == (Outcome.APPROVED, "authorized", 4200)
    records = sim.stats()["records"]
    assert (await connector.authorize(request)).outcome is Outcome.AMBIGUOUS
    assert sim.stats()["records"] == records
    assert (
        await connector.status(request.reference)
    ).processor_reference == status.processor_reference


async def test_processing_error_is_failed_and_leaves_nothing(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """The processing-error card is FAILED and nothing is recorded (status: not_found)."""
    connector = connect(acquirer())
    request = auth("4000000000000119")
    result = await connector.authorize(request)
    assert result.outcome is Outcome.FAILED
    assert result.error == "processing_error (500)"
    assert (await connector.status(request.reference)).status == "not_found"


async def test_injected_timeouts_done_or_not(acquirer: AcquirerFactory, connect: Connect) -> None:
    """timeout_rate makes calls hang: done before the hang (status finds it) or never."""
    sim = acquirer(timeout_rate=1.0, timeout_done_ratio=1.0, hang_seconds=10)
    connector = connect(sim, timeout=0.3)
    done, lost = auth(), auth()
    assert (await connector.authorize(done)).outcome is Outcome.AMBIGUOUS
    sim.configure(timeout_done_ratio=0.0)
    assert (await connector.authorize(lost)).outcome is Outcome.AMBIGUOUS
    sim.configure(timeout_rate=0.0)
    assert (await connector.status(done.reference)).status == "authorized"
    assert (await connector.status(lost.reference)).status == "not_found"


async def test_error_rate_gives_definite_failures(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """Injected errors are FAILED (503) and nothing is done; at 0.5 both outcomes occur."""
    sim = acquirer(error_rate=1.0)
    connector = connect(sim)
    request = auth()
    result = await connector.authorize(request)
    assert (result.outcome, result.error) == (Outcome.FAILED, "service_unavailable (503)")
    sim.configure(error_rate=0.5)
    results = await asyncio.gather(*(connector.authorize(auth()) for _ in range(40)))
    assert {r.outcome for r in results} == {Outcome.APPROVED, Outcome.FAILED}
    sim.configure(error_rate=0.0)
    assert (await connector.status(request.reference)).status == "not_found"


async def test_down_via_admin_fails_fast(acquirer: AcquirerFactory, connect: Connect) -> None:
    """Taken down at run time, the simulator fails every call at once (before its latency);
    brought back up, it serves again."""
    sim = acquirer(down=True, latency={"kind": "fixed", "ms": 800})
    connector = connect(sim, timeout=5)
    request = auth()
    started = time.perf_counter()
    results = await asyncio.gather(
        connector.authorize(request), connector.status(request.reference)
    )
    assert time.perf_counter() - started < 0.7  # the latency alone would be 0.8 s
    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert results[0].error == "service_unavailable (503)"
    assert sim.stats()["faults"]["down"] == 2
    sim.configure(down=False, latency={"kind": "fixed", "ms": 0})
    assert (await connector.authorize(request)).outcome is Outcome.APPROVED


async def test_outage_window(acquirer: AcquirerFactory, connect: Connect) -> None:
    """An outage window set at run time is down only between its start and its end."""
    sim = acquirer(outages=[{"start": 0.6, "duration": 0.8}])
    connector = connect(sim)
    t0 = time.monotonic()
    before = await connector.authorize(auth())
    await asyncio.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    during = await connector.authorize(auth())
    await asyncio.sleep(max(0.0, t0 + 1.8 - time.monotonic()))
    after = await connector.authorize(auth())
    assert [r.outcome for r in (before, during, after)] == [
        Outcome.APPROVED,
        Outcome.FAILED,
        Outcome.APPROVED,
    ]


async def test_hanging_outage_is_ambiguous_and_does_nothing(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """In a black-hole outage a call times out (AMBIGUOUS) and is never done."""
    sim = acquirer(down=True, outage_mode="hang", hang_seconds=10)
    connector = connect(sim, timeout=0.3)
    request = auth()
    assert (await connector.authorize(request)).outcome is Outcome.AMBIGUOUS
    sim.configure(down=False)
    assert (await connector.status(request.reference)).status == "not_found"


async def test_pool_exhausted_is_failed(acquirer: AcquirerFactory, connect: Connect) -> None:
    """With every pooled connection busy, a call that cannot get one in time is FAILED."""
    connector = connect(
        acquirer(hang_seconds=10), timeout=1.0, connect_timeout=0.2, max_connections=1
    )
    hanging = asyncio.create_task(connector.authorize(auth(TIMEOUT_CARD)))
    await asyncio.sleep(0.1)
    blocked = await connector.authorize(auth())
    assert blocked.outcome is Outcome.FAILED
    assert blocked.error is not None
    assert "PoolTimeout" in blocked.error
    assert (await hanging).outcome is Outcome.AMBIGUOUS


async def test_fixed_latency_is_respected(acquirer: AcquirerFactory, connect: Connect) -> None:
    """With a fixed 150 ms latency, calls take at least that, and not wildly more."""
    connector = connect(acquirer(latency={"kind": "fixed", "ms": 150}))
    results = await asyncio.gather(*(connector.authorize(auth()) for _ in range(5)))
    assert all(r.outcome is Outcome.APPROVED for r in results)
    assert min(r.latency_ms for r in results) >= 145
    assert max(r.latency_ms for r in results) < 1500


async def test_lognormal_latency_is_roughly_respected(
    acquirer: AcquirerFactory, connect: Connect
) -> None:
    """A log-normal latency (p50 40 ms, p99 120 ms, cap 150 ms) shows a plausible median:
    well above nothing (the delay is applied), and not seconds (it is not a fixed huge
    one); a busy machine adds its own queueing on top, so the upper bound is loose."""
    latency = {"kind": "lognormal", "p50_ms": 40, "p99_ms": 120, "max_ms": 150}
    connector = connect(acquirer(latency=latency))
    results = await asyncio.gather(*(connector.authorize(auth()) for _ in range(40)))
    latencies = [r.latency_ms for r in results]
    assert 20 < statistics.median(latencies) < 1000
    assert min(latencies) > 5


async def test_simulators_side_by_side(acquirer: AcquirerFactory, connect: Connect) -> None:
    """Three simulators run at once with their own behaviour: the selective card succeeds on
    one, fails on another, is declined on the third; one is down, the others are not."""
    acquirer.start("acq", "acq-b", "acq-c")
    a = acquirer("acq")
    b = acquirer("acq-b", selective_card="error")
    c = acquirer("acq-c", selective_card="decline", latency={"kind": "fixed", "ms": 20})
    assert len({a.url, b.url, c.url}) == 3
    ca, cb, cc = connect(a), connect(b), connect(c)
    results = await asyncio.gather(*(x.authorize(auth(SELECTIVE_CARD)) for x in (ca, cb, cc)))
    assert [outcome(r) for r in results] == [
        (Outcome.APPROVED, None),
        (Outcome.FAILED, None),
        (Outcome.DECLINED, "do_not_honor"),
    ]
    assert results[0].processor_reference is not None
    assert results[0].processor_reference.startswith("acq_")
    b.configure(down=True)
    ok = await asyncio.gather(*(x.authorize(auth()) for x in (ca, cb, cc)))
    assert [r.outcome for r in ok] == [Outcome.APPROVED, Outcome.FAILED, Outcome.APPROVED]
    assert a.config()["down"] is False


def test_flags_set_the_behaviour(acquirer_pool: AcquirerPool, tmp_path: Path) -> None:
    """Command-line flags give the behaviour that /admin/config then shows; bad ones exit 2."""
    (sim,) = acquirer_pool.start(
        ("acq-flags", "--latency-p50-ms", "5", "--latency-p99-ms", "50", "--error-rate", "0.25",
         "--selective-card", "timeout", "--outage", "600:30", "--seed", "7")
    )  # fmt: skip
    config = sim.config()
    assert config["latency"] == {
        "kind": "lognormal",
        "p50_ms": 5.0,
        "p99_ms": 50.0,
        "max_ms": 10000.0,
    }
    assert (config["error_rate"], config["selective_card"]) == (0.25, "timeout")
    (window,) = config["outages"]
    assert 590 < window["start"] <= 600
    assert window["duration"] == 30
    log = tmp_path / "bad.log"
    with pytest.raises(RuntimeError, match="exited with status 2"):
        SimulatorProcess.start("acq-bad", "--error-rate", "2", log_path=log, timeout=30)
    assert "error_rate" in log.read_text()


async def test_logs_never_hold_a_card_number(
    acquirer: AcquirerFactory, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """After every test card, a bad one and every fault, neither the simulator's log nor
    the connector's holds a full card number (their last four digits are fine)."""
    caplog.set_level(logging.DEBUG)
    sim = acquirer(hang_seconds=10)
    connector = connect(sim, timeout=0.3)
    numbers = [*TEST_CARDS, "4242424242424241", "1234567890123452"]
    await asyncio.gather(*(connector.authorize(auth(number)) for number in numbers))
    sim.configure(error_rate=1.0)
    await connector.authorize(auth())
    sim.configure(error_rate=0.0, down=True)
    await connector.authorize(auth())
    sim.configure(down=False)
    simulator_log = sim.log_text()
    assert "****4242" in simulator_log or '"last4":"4242"' in simulator_log
    for number in numbers:
        assert number not in simulator_log
        assert number not in caplog.text
        assert number[-12:] not in simulator_log
