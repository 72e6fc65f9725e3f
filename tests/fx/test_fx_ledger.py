"""Conversions booked in the ledger's own rules (no database): over random sequences of
conversions, held conversions captured in part or voided, and a card payment's captures
and refunds at its locked rate, every currency sums to zero, no customer gets more than
the rate allows, the house never pays out more than the mid rate; and a quote past its
expiry is refused unless it was used in time."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.errors import ErrorCode, RequestError
from paycore.fx.accounts import account_requests
from paycore.fx.conversion import capture_legs, captured_amounts, open_legs, void_legs
from paycore.fx.quotes import check_usable, customer_rate, price
from paycore.fx.rounding import minor_ratio, rate_text
from paycore.fx.settlement import LockedRate, capture_chain, refund_chain, settle_chain
from paycore.ledger.model import Account, AccountFlags, TransferRequest
from paycore.ledger.rules import WorkingSet
from paycore.storage.fx_quotes import FxQuoteRow

NOW = 1_700_000_000 * 10**9
CURRENCIES = ("JPY", "USD", "EUR", "KWD")  # exponents 0, 2, 2, 3
FUNDS = 10**9


def _account(account_id: str, currency: str, *, no_overdraft: bool = False) -> Account:
    return Account(
        id=account_id,
        currency=currency,
        code=0,
        flags=AccountFlags(no_overdraft=no_overdraft),
        metadata=None,
        timestamp=1,
    )


def _ledger() -> WorkingSet:
    """Per currency a bank (unlimited), a wallet (no overdraft) and the FX accounts."""
    accounts = [
        _account(f"{kind}-{c}", c, no_overdraft=kind == "wallet")
        for c in CURRENCIES
        for kind in ("bank", "wallet")
    ]
    accounts += [_account(r.id, r.currency) for r in account_requests(*CURRENCIES)]
    ws = WorkingSet(accounts, [], [], now=NOW, last_timestamp=1)
    funding = [
        TransferRequest(f"fund-{c}", f"bank-{c}", f"wallet-{c}", FUNDS, c) for c in CURRENCIES
    ]
    assert all(r.ok for r in ws.apply_transfers(funding))
    return ws


pairs = st.tuples(st.sampled_from(CURRENCIES), st.sampled_from(CURRENCIES)).filter(
    lambda p: p[0] != p[1]
)
rates = st.integers(1, 10**9).map(lambda n: Fraction(n, 10**6))
# (kind, pair, mid rate, spread bps, sell amount, part to capture)
operations = st.tuples(
    st.sampled_from(["convert", "capture", "void"]),
    pairs,
    rates,
    st.integers(0, 500),
    st.integers(1, FUNDS // 4),
    st.integers(1, FUNDS // 4),
)


@dataclass
class _Books:
    """What the customers were promised and got, per posted conversion part."""

    ws: WorkingSet = field(default_factory=_ledger)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def quote(self, pair: tuple[str, str], mid: Fraction, bps: int, sell: int) -> FxQuoteRow:
        p = price(*pair, mid, spread_bps=bps, sell_amount=sell)
        return FxQuoteRow(
            f"fxq_{next(self.ids):024x}", "t", p.sell_currency, p.buy_currency,
            p.sell_amount, p.buy_amount, p.spread_amount, rate_text(p.rate),
            rate_text(p.mid_rate), NOW, NOW + 1,
        )  # fmt: skip

    def book(self, items: tuple[TransferRequest, ...]) -> bool:
        results = self.ws.apply_transfers(items, settlement=True)
        assert all(r.ok for r in results) or not any(r.ok for r in results)  # all or none
        return all(r.ok for r in results)

    def net(self, account_id: str) -> tuple[int, int]:
        a = self.ws.accounts[account_id]
        return a.cpo - a.dpo, a.cp - a.dp


def _check_conserved(books: _Books) -> None:
    for currency in CURRENCIES:
        ids = [i for i, a in books.ws.accounts.items() if a.account.currency == currency]
        posted = sum(books.net(i)[0] for i in ids)
        pending = sum(books.net(i)[1] for i in ids)
        assert (posted, pending) == (0, 0), currency
        wallet = books.ws.accounts[f"wallet-{currency}"]
        assert wallet.cpo - wallet.dpo - wallet.dp >= 0  # no overdraft, holds included


def _check_fair(quote: FxQuoteRow, sold: int, bought: int, spread: int) -> None:
    """Rounding creates no value: the customer gets at most what the rate buys, the
    house pays out (customer and revenue) at most what the mid rate buys."""
    pair = (quote.sell_currency, quote.buy_currency)
    assert bought <= sold * minor_ratio(Fraction(quote.rate), *pair)
    assert bought + spread <= sold * minor_ratio(Fraction(quote.mid_rate), *pair)
    assert spread >= 0


def _capture(books: _Books, quote: FxQuoteRow, part: int, buy_id: str, before: int) -> None:
    """Capture ``part`` of the held ``quote``; one that buys nothing is voided instead."""
    try:
        amounts = captured_amounts(quote, part)
    except RequestError as exc:
        if exc.code is not ErrorCode.FX_AMOUNT_TOO_SMALL:
            raise
        assert books.book(void_legs(quote))
        return
    assert books.book(capture_legs(quote, part))
    assert books.net(buy_id)[0] - before == amounts[1]
    _check_fair(quote, *amounts)


@settings(max_examples=60, deadline=None)
@given(st.lists(operations, min_size=1, max_size=12))
def test_conversions_captures_and_voids_conserve_every_currency(
    ops: list[tuple[str, tuple[str, str], Fraction, int, int, int]],
) -> None:
    """Random conversions, held ones captured in part (at the locked rate) or voided:
    after every step each currency sums to zero, posted and pending, and each posted
    part is fair to the rate."""
    books = _Books()
    for kind, pair, mid, bps, sell, part in ops:
        try:
            quote = books.quote(pair, mid, bps, sell)
        except RequestError:
            continue  # buys nothing, or beyond the largest amount: nothing to book
        sell_id, buy_id = f"wallet-{pair[0]}", f"wallet-{pair[1]}"
        before = books.net(buy_id)[0]
        if kind == "convert":
            if books.book(open_legs(quote, sell_id, buy_id)):
                _check_fair(quote, quote.sell_amount, books.net(buy_id)[0] - before,
                            quote.spread_amount)  # fmt: skip
        elif books.book(open_legs(quote, sell_id, buy_id, pending=True)):
            _check_conserved(books)
            if kind == "void":
                assert books.book(void_legs(quote))
                assert books.net(buy_id)[0] == before
            else:
                _capture(books, quote, min(part, quote.sell_amount), buy_id, before)
        _check_conserved(books)


def test_a_failed_leg_books_nothing() -> None:
    """A conversion the wallet cannot cover is refused as a whole: no leg moves."""
    books = _Books()
    quote = books.quote(("USD", "EUR"), Fraction(92, 100), 50, FUNDS + 1)
    assert not books.book(open_legs(quote, "wallet-USD", "wallet-EUR"))
    assert books.net("wallet-EUR") == (FUNDS, 0)
    _check_conserved(books)


@given(st.integers(0, 10**6), st.integers(-(10**6), 10**6))
def test_a_quote_past_its_expiry_is_refused_unless_used_in_time(lifetime: int, offset: int) -> None:
    """At or past ``expires_at`` an unused quote is ``fx_quote_expired``; before it, or
    once used (a retry of its conversion), it is usable."""
    expires_at = NOW + lifetime
    now = expires_at + offset
    check_usable("fxq_x", expires_at, now, used=True)
    if offset < 0:
        check_usable("fxq_x", expires_at, now, used=False)
        return
    with pytest.raises(RequestError) as raised:
        check_usable("fxq_x", expires_at, now, used=False)
    assert raised.value.code is ErrorCode.FX_QUOTE_EXPIRED


payment_ops = st.lists(
    st.tuples(st.sampled_from(["capture", "refund", "refund_voided"]), st.integers(1, 10**9)),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(pairs, rates, st.integers(0, 500), st.integers(1, 10**9), payment_ops)
def test_a_payments_captures_and_refunds_conserve_every_currency(
    pair: tuple[str, str],
    mid: Fraction,
    bps: int,
    authorized: int,
    ops: list[tuple[str, int]],
) -> None:
    """A card payment in ``pair[0]`` to a merchant in ``pair[1]``: random partial
    captures and refunds (held, then posted or voided) at the locked rate keep each
    currency at zero, never credit the merchant more than the rate gives nor debit it
    less than the rate asks, and a payment refunded in full leaves it nothing."""
    p, m = pair
    locked = LockedRate(p, m, rate_text(customer_rate(mid, bps)), rate_text(mid))
    accounts = [_account("psp", p), _account("merchant", m, no_overdraft=True)]
    accounts += [_account(r.id, r.currency) for r in account_requests(p, m)]
    books = _Books(WorkingSet(accounts, [], [], now=NOW, last_timestamp=1))
    captured = refunded = credited = debited = 0
    for n, (kind, amount) in enumerate(ops):
        if kind == "capture":
            part = min(amount, authorized - captured)
            chain = _capture_chain(f"c{n}", locked, part)
            if chain is None:
                continue
            assert books.book(chain)
            captured, credited = captured + part, credited + (chain[1].amount or 0)
        else:
            part = min(amount, captured - refunded)
            if part == 0:
                continue
            held = refund_chain(f"h{n}", locked, "psp", "merchant", part)
            if books.book(held):  # else the merchant could not cover it: nothing moved
                post = kind == "refund"
                assert books.book(settle_chain(f"s{n}", f"h{n}", post=post))
                if post:
                    refunded, debited = refunded + part, debited + (held[0].amount or 0)
        _check_conserved_in(books, p, m)
        assert books.net("merchant") == (credited - debited, 0)
        rate = minor_ratio(customer_rate(mid, bps), p, m)
        assert credited <= captured * rate
        assert debited >= refunded * rate
    if refunded == captured:
        assert books.net("merchant")[0] <= 0


def _capture_chain(
    chain_id: str, locked: LockedRate, part: int
) -> tuple[TransferRequest, ...] | None:
    """The chain capturing ``part``; None for nothing, or for what credits nothing."""
    if part == 0:
        return None
    try:
        return capture_chain(chain_id, locked, "psp", "merchant", part)
    except RequestError as exc:
        if exc.code is not ErrorCode.FX_AMOUNT_TOO_SMALL:
            raise
        return None


def _check_conserved_in(books: _Books, *currencies: str) -> None:
    for currency in currencies:
        ids = [i for i, a in books.ws.accounts.items() if a.account.currency == currency]
        assert sum(books.net(i)[0] for i in ids) == 0, currency
        assert sum(books.net(i)[1] for i in ids) == 0, currency
