"""The simulator's rules without HTTP: cards, idempotency, captures, voids, refunds."""

from __future__ import annotations

from datetime import date
from typing import Any

import msgspec
import pytest

from paycore.payments.processors.simulator import TEST_CARDS, CardBehaviour, luhn_valid
from paycore.payments.processors.simulator.book import AcquirerBook, Answer, AuthorizeIn
from paycore.payments.processors.simulator.cards import card_decline, mask

TODAY = date(2026, 6, 15)


def book() -> AcquirerBook:
    return AcquirerBook("acq-unit", today=lambda: TODAY)


def auth(
    reference: str = "a1",
    number: str = "4242424242424242",
    *,
    amount: int = 1000,
    capture: bool = False,
    exp: tuple[int, int] = (12, 2030),
    cvc: str = "123",
) -> bytes:
    card = {"number": number, "exp_month": exp[0], "exp_year": exp[1], "cvc": cvc}
    body = {"reference": reference, "amount": amount, "currency": "EUR", "card": card}
    return msgspec.json.encode(body | {"capture": capture})


def body(answer: Answer) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(answer.body)
    return decoded


def capture(b: AcquirerBook, ref: str, amount: int, parent: str = "a1") -> Answer:
    return b.capture(parent, msgspec.json.encode({"capture_reference": ref, "amount": amount}))


def refund(b: AcquirerBook, ref: str, amount: int, parent: str = "a1") -> Answer:
    return b.refund(parent, msgspec.json.encode({"refund_reference": ref, "amount": amount}))


def test_every_test_card_is_luhn_valid() -> None:
    """Each number of the card table passes the Luhn check (so only its behaviour differs)."""
    assert all(luhn_valid(number) for number in TEST_CARDS)
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize(
    ("number", "exp", "cvc", "code"),
    [
        ("4242424242424241", (12, 2030), "123", "invalid_card"),
        ("4242-4242-4242-4242", (12, 2030), "123", "invalid_card"),
        ("42424242", (12, 2030), "123", "invalid_card"),
        ("4242424242424242", (13, 2030), "123", "invalid_expiry"),
        ("4242424242424242", (12, 30), "123", "invalid_expiry"),
        ("4242424242424242", (5, 2026), "123", "expired_card"),
        ("4242424242424242", (6, 2026), "12", "invalid_cvc"),
        ("378282246310005", (6, 2026), "123", "invalid_cvc"),
        ("378282246310005", (6, 2026), "1234", None),
        ("4242424242424242", (6, 2026), "123", None),
    ],
)
def test_card_validation(number: str, exp: tuple[int, int], cvc: str, code: str | None) -> None:
    """Malformed numbers, expiries and CVCs get their own decline code; this month is valid."""
    assert card_decline(number, exp[0], exp[1], cvc, TODAY) == code


def test_mask_shows_only_the_last_four_digits() -> None:
    """A masked number keeps the last four digits only."""
    assert mask("4242424242424242") == "****4242"


def test_same_reference_same_body_gets_the_same_bytes() -> None:
    """A repeated authorization is answered with the first answer, byte for byte."""
    b = book()
    first = b.authorize(auth())
    assert first.status_code == 200
    assert b.authorize(auth()) == first
    assert len(b) == 1


def test_same_reference_other_body_is_409() -> None:
    """The same reference with another amount or card is refused with reference_reused."""
    b = book()
    b.authorize(auth())
    for other in (auth(amount=999), auth(number="5555555555554444"), auth(capture=True)):
        answer = b.authorize(other)
        assert (answer.status_code, body(answer)["error"]) == (409, "reference_reused")
    assert body(b.status("a1"))["amount"] == 1000


def test_declines_are_recorded_and_replayed() -> None:
    """A declined card is recorded as declined: the status lookup and a replay say so."""
    b = book()
    answer = b.authorize(auth(number="4000000000009979"))
    assert answer.status_code == 402
    assert body(answer)["decline_code"] == "stolen_card"
    assert b.authorize(auth(number="4000000000009979")) == answer
    assert body(b.status("a1"))["status"] == "declined"


def test_processing_error_records_nothing() -> None:
    """The processing-error card answers 500 and leaves no trace: status is not_found."""
    b = book()
    assert b.authorize(auth(number="4000000000000119")).status_code == 500
    assert b.status("a1").status_code == 404
    assert body(b.status("a1"))["status"] == "not_found"


def test_timeout_card_is_done_but_hangs() -> None:
    """The timeout card is authorized at once; its answer (and replays) must hang."""
    b = book()
    answer = b.authorize(auth(number="4000000000007775"))
    assert answer.hang
    assert b.authorize(auth(number="4000000000007775")).hang
    status = b.status("a1")
    assert (status.status_code, status.hang, body(status)["status"]) == (200, False, "authorized")


@pytest.mark.parametrize(
    ("mode", "status_code", "hang"),
    [
        ("approve", 200, False),
        ("error", 500, False),
        ("decline", 402, False),
        ("timeout", 200, True),
    ],
)
def test_selective_card_follows_the_mode(mode: Any, status_code: int, hang: bool) -> None:
    """The selective card does what the simulator's selective_card says."""
    answer = book().authorize(auth(number="4000000000003337"), mode)
    assert (answer.status_code, answer.hang) == (status_code, hang)
    assert CardBehaviour.SELECTIVE in TEST_CARDS.values()


def test_partial_captures_up_to_the_authorized_amount() -> None:
    """Several captures add up to the authorized amount, never beyond; each is idempotent."""
    b = book()
    b.authorize(auth(amount=1000))
    first = capture(b, "c1", 300)
    assert capture(b, "c1", 300) == first  # a repeat captures nothing more
    assert capture(b, "c2", 700).status_code == 200
    over = capture(b, "c3", 1)
    assert (over.status_code, body(over)["decline_code"]) == (422, "amount_exceeds_authorized")
    assert body(b.status("a1"))["captured_amount"] == 1000
    assert body(b.status("a1"))["status"] == "captured"
    assert body(b.status("c3"))["status"] == "declined"
    assert capture(b, "c1", 400).status_code == 409


def test_void_releases_the_remainder_and_stops_captures() -> None:
    """A void is idempotent, keeps what was captured and refuses later captures."""
    b = book()
    b.authorize(auth(amount=1000))
    capture(b, "c1", 400)
    first = b.void("a1")
    assert first.status_code == 200
    assert b.void("a1") == first
    assert body(first)["voided"] is True
    assert body(capture(b, "c2", 100))["decline_code"] == "authorization_voided"
    assert body(b.status("a1"))["captured_amount"] == 400


def test_void_of_a_fresh_authorization_and_of_a_full_capture() -> None:
    """An untouched authorization voids to ``voided``; a fully captured one cannot be voided."""
    b = book()
    b.authorize(auth("a1"))
    assert body(b.void("a1"))["status"] == "voided"
    b.authorize(auth("a2", capture=True))
    refused = b.void("a2")
    assert (refused.status_code, body(refused)["decline_code"]) == (
        422,
        "authorization_fully_captured",
    )
    assert b.void("nope").status_code == 404


def test_refunds_never_exceed_what_was_captured() -> None:
    """Refunds add up to the captured amount at most; a repeat refunds nothing more."""
    b = book()
    b.authorize(auth(amount=1000))
    capture(b, "c1", 600)
    assert refund(b, "r1", 400).status_code == 200
    assert refund(b, "r1", 400) == refund(b, "r1", 400)
    over = refund(b, "r2", 201)
    assert body(over)["decline_code"] == "amount_exceeds_captured"
    assert refund(b, "r3", 200).status_code == 200
    state = body(b.status("a1"))
    assert (state["refunded_amount"], state["status"]) == (600, "refunded")


def test_captures_and_refunds_need_an_authorization() -> None:
    """A capture or refund of an unknown reference is 404 and recorded nowhere."""
    b = book()
    assert capture(b, "c1", 1, parent="nope").status_code == 404
    assert refund(b, "r1", 1, parent="nope").status_code == 404
    assert len(b) == 0
    b.authorize(auth("a1", number="4000000000000002"))
    assert body(capture(b, "c1", 1))["decline_code"] == "authorization_declined"


def test_bad_bodies_are_400_and_name_no_card_number() -> None:
    """A malformed request is 400 invalid_request; the message never repeats the number."""
    b = book()
    card = {"number": "4242424242424242", "exp_month": "12", "exp_year": 2030, "cvc": "123"}
    raw = msgspec.json.encode({"reference": "a1", "amount": 1, "currency": "EUR", "card": card})
    answer = b.authorize(raw)
    assert (answer.status_code, body(answer)["error"]) == (400, "invalid_request")
    assert b"4242424242424242" not in answer.body
    assert b.authorize(b"{not json").status_code == 400
    assert b.authorize(auth(amount=0)).status_code == 400


def test_payout_destinations() -> None:
    """Payouts are paid, declined account_closed, failed or hang by their destination."""
    b = book()

    def payout(ref: str, destination: str) -> Answer:
        fields = {"reference": ref, "amount": 500, "currency": "EUR"}
        return b.payout(msgspec.json.encode(fields | {"destination": destination}))

    assert body(payout("p1", "DE89370400440532013000"))["status"] == "paid_out"
    assert body(payout("p2", "GB00CLOSED00000000"))["decline_code"] == "account_closed"
    assert payout("p3", "GB00ERROR000000000").status_code == 500
    assert payout("p4", "GB00TIMEOUT0000000").hang
    assert payout("p5", "not an iban").status_code == 400


def test_card_number_is_never_in_an_answer_or_a_repr() -> None:
    """Answers carry the last four digits only; a decoded card's repr is masked."""
    b = book()
    for index, number in enumerate(TEST_CARDS):
        answer = b.authorize(auth(f"a{index}", number))
        assert number.encode() not in answer.body
    request = msgspec.json.decode(auth(), type=AuthorizeIn)
    assert "4242424242424242" not in repr(request)
