"""The sync client against a real ``paycore serve``: every service end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from paycore_client import (
    AuthenticationError,
    ConflictError,
    IdempotencyError,
    InsufficientFundsError,
    InvalidRequestError,
    NotFoundError,
    Paycore,
    PermissionDeniedError,
)
from sdk.support import LiveServer

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
DECLINED_CARD = {**CARD, "number": "4000000000009995"}


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[Paycore]:
    with Paycore(live_server.write_key, base_url=live_server.base_url) as client:
        yield client


def _fund(client: Paycore, uid: str, account_id: str, amount: int) -> None:
    """Credit ``account_id`` from a fresh source account that may go negative."""
    source = client.accounts.create(id=f"{uid}-src-{account_id}", currency="USD")
    client.transfers.create(
        id=f"{uid}-fund-{account_id}",
        debit_account_id=source.id,
        credit_account_id=account_id,
        amount=amount,
        currency="USD",
    )


def test_accounts_and_a_transfer_move_integer_money(client: Paycore, uid: str) -> None:
    """Two accounts, a transfer between them; balances read back as int counters."""
    alice = client.accounts.create(
        id=f"{uid}-alice", currency="USD", flags={"no_overdraft": True}, metadata={"team": uid}
    )
    assert alice.flags.no_overdraft
    assert alice.metadata == {"team": uid}
    client.accounts.create(id=f"{uid}-bob", currency="USD")
    _fund(client, uid, alice.id, 10_000)
    transfer = client.transfers.create(
        id=f"{uid}-t1",
        debit_account_id=alice.id,
        credit_account_id=f"{uid}-bob",
        amount=2_550,
        currency="USD",
        metadata={"order": "o-1"},
    )
    assert (transfer.status, transfer.amount, transfer.metadata) == (
        "posted",
        2_550,
        {"order": "o-1"},
    )
    balance = client.accounts.retrieve(alice.id).balance
    assert balance.available == 7_450
    assert isinstance(balance.available, int)
    assert client.transfers.retrieve(transfer.id) == transfer
    again = client.transfers.create(
        id=f"{uid}-t1",
        debit_account_id=alice.id,
        credit_account_id=f"{uid}-bob",
        amount=2_550,
        currency="USD",
        metadata={"order": "o-1"},
    )
    assert again == transfer  # the id is itself an idempotency key: nothing moved twice
    assert client.accounts.retrieve(alice.id).balance.available == 7_450


def test_a_hold_posted_in_part_and_another_voided(client: Paycore, uid: str) -> None:
    """A hold shows as pending, its post for less releases the rest; a void releases all."""
    wallet = client.accounts.create(id=f"{uid}-w", currency="EUR", flags={"no_overdraft": True})
    shop = client.accounts.create(id=f"{uid}-shop", currency="EUR")
    source = client.accounts.create(id=f"{uid}-src", currency="EUR")
    client.transfers.create(
        id=f"{uid}-fund",
        debit_account_id=source.id,
        credit_account_id=wallet.id,
        amount=5_000,
        currency="EUR",
    )
    hold = client.transfers.create(
        id=f"{uid}-h1",
        debit_account_id=wallet.id,
        credit_account_id=shop.id,
        amount=3_000,
        currency="EUR",
        pending=True,
        timeout_seconds=3600,
    )
    assert hold.status == "pending"
    assert hold.expires_at is not None
    assert client.accounts.retrieve(wallet.id).balance.available == 2_000
    posted = client.transfers.post_pending(hold.id, amount=1_200)
    assert (posted.status, posted.amount, posted.pending_id) == ("posted", 1_200, hold.id)
    assert client.transfers.retrieve(hold.id).status == "posted"
    balance = client.accounts.retrieve(wallet.id).balance
    assert (balance.debits_posted, balance.debits_pending, balance.available) == (1_200, 0, 3_800)

    second = client.transfers.create(
        id=f"{uid}-h2",
        debit_account_id=wallet.id,
        credit_account_id=shop.id,
        amount=800,
        currency="EUR",
        pending=True,
    )
    voided = client.transfers.void_pending(second.id)
    assert voided.status == "voided"
    assert client.transfers.retrieve(second.id).status == "voided"
    assert client.accounts.retrieve(wallet.id).balance.available == 3_800
    with pytest.raises(ConflictError) as refused:
        client.transfers.post_pending(second.id, id=f"{uid}-late-post")
    assert refused.value.code == "pending_transfer_already_voided"


def test_a_batch_answers_per_item_and_a_linked_chain_fails_whole(client: Paycore, uid: str) -> None:
    """Batch results come in order; a refused link fails its whole chain."""
    a = client.accounts.create(id=f"{uid}-a", currency="USD", flags={"no_overdraft": True})
    b = client.accounts.create(id=f"{uid}-b", currency="USD")
    _fund(client, uid, a.id, 100)
    item = {"debit_account_id": a.id, "credit_account_id": b.id, "currency": "USD"}
    result = client.transfers.create_batch(
        [
            {"id": f"{uid}-1", "amount": 60, **item},  # type: ignore[typeddict-item]
            {"id": f"{uid}-2", "amount": 30, "linked": True, **item},  # type: ignore[typeddict-item]
            {"id": f"{uid}-3", "amount": 500, **item},  # type: ignore[typeddict-item]
        ]
    )
    assert [r.id for r in result.results] == [f"{uid}-1", f"{uid}-2", f"{uid}-3"]
    assert result.results[0].ok
    assert result.results[0].status == "posted"
    assert [r.error.code for r in result.errors if r.error] == [
        "linked_event_failed",
        "insufficient_funds",
    ]
    assert client.accounts.retrieve(a.id).balance.available == 40


def test_lists_walk_every_page_once(client: Paycore, uid: str) -> None:
    """``auto_paging_iter`` follows ``next_cursor`` across pages, in creation order."""
    ids = [
        client.accounts.create(id=f"{uid}-{n}", currency="GBP", metadata={"run": uid}).id
        for n in range(7)
    ]
    first = client.accounts.list(metadata={"run": uid}, limit=2)
    assert [a.id for a in first] == ids[:2]
    assert first.has_more
    assert [a.id for a in first.auto_paging_iter()] == ids
    newest_first = client.accounts.list(metadata={"run": uid}, limit=3, order="desc")
    assert [a.id for a in newest_first.auto_paging_iter()] == ids[::-1]
    window = client.accounts.list(
        metadata={"run": uid}, created_gte=datetime.now(UTC) - timedelta(hours=1), limit=100
    )
    assert len(window) == 7
    assert not window.has_more

    for n in range(5):
        client.transfers.create(
            id=f"{uid}-x{n}",
            debit_account_id=ids[0],
            credit_account_id=ids[1 + n % 2],
            amount=10 + n,
            currency="GBP",
        )
    page = client.accounts.transfers(ids[0], limit=2)
    assert [t.amount for t in page.auto_paging_iter()] == [10, 11, 12, 13, 14]
    credits = client.accounts.transfers(ids[1], side="credits")
    assert [t.amount for t in credits] == [10, 12, 14]
    listed = client.transfers.list(account_id=ids[2], status="posted", limit=1)
    assert [t.id for t in listed.auto_paging_iter()] == [f"{uid}-x1", f"{uid}-x3"]
    resumed = client.accounts.transfers(ids[0], limit=2, cursor=page.next_cursor or "")
    assert [t.amount for t in resumed.auto_paging_iter()] == [12, 13, 14]


def test_balance_history_of_a_history_account(client: Paycore, uid: str) -> None:
    """A ``history`` account lists its balance after each transfer, paged."""
    kept = client.accounts.create(id=f"{uid}-h", currency="USD", flags={"history": True})
    other = client.accounts.create(id=f"{uid}-o", currency="USD")
    for n in range(3):
        client.transfers.create(
            id=f"{uid}-{n}",
            debit_account_id=other.id,
            credit_account_id=kept.id,
            amount=100,
            currency="USD",
        )
    records = client.accounts.balance_history(kept.id, limit=2)
    assert [r.available for r in records.auto_paging_iter()] == [100, 200, 300]
    with pytest.raises(InvalidRequestError):
        client.accounts.balance_history(other.id)


def test_close_an_account_then_it_refuses_transfers(client: Paycore, uid: str) -> None:
    """A closed account stays closed; a transfer to it is a ConflictError."""
    account = client.accounts.create(id=f"{uid}-c", currency="USD")
    other = client.accounts.create(id=f"{uid}-d", currency="USD")
    closed = client.accounts.close(account.id)
    assert closed.flags.closed
    with pytest.raises(ConflictError) as refused:
        client.transfers.create(
            id=f"{uid}-t",
            debit_account_id=other.id,
            credit_account_id=account.id,
            amount=1,
            currency="USD",
        )
    assert refused.value.code == "account_closed"
    assert refused.value.status == 409


def test_a_card_payment_captured_in_part_then_refunded(client: Paycore, uid: str) -> None:
    """Authorize, capture part, refund part: the payment shows each amount as an int."""
    shop = client.accounts.create(id=f"{uid}-shop", currency="USD")
    payment = client.payments.create(
        amount=5_000,
        currency="USD",
        merchant_account_id=shop.id,
        capture="manual",
        source={"card": CARD},  # type: ignore[typeddict-item]
    )
    assert payment.status == "requires_capture"
    assert payment.amount_capturable == 5_000
    assert payment.card is not None
    assert payment.card.last4 == "4242"
    captured = client.payments.capture(payment.id, amount=3_000, final_capture=True)
    assert (captured.status, captured.amount_captured) == ("succeeded", 3_000)
    refund = client.refunds.create(payment_id=payment.id, amount=1_000)
    assert (refund.status, refund.amount, refund.payment_id) == ("succeeded", 1_000, payment.id)
    read = client.payments.retrieve(payment.id)
    assert read.amount_refunded == 1_000
    assert [r.id for r in read.refunds or []] == [refund.id]
    assert client.refunds.retrieve(refund.id) == refund
    assert [r.id for r in client.refunds.list(payment_id=payment.id)] == [refund.id]
    assert [p.id for p in client.payments.list(merchant_account_id=shop.id)] == [payment.id]
    assert client.accounts.retrieve(shop.id).balance.credits_posted == 3_000


def test_a_declined_card_and_a_canceled_authorization(client: Paycore, uid: str) -> None:
    """A decline is a failed payment, not an exception; cancel releases an authorization."""
    shop = client.accounts.create(id=f"{uid}-shop", currency="USD")
    declined = client.payments.create(
        amount=700,
        currency="USD",
        merchant_account_id=shop.id,
        source={"card": DECLINED_CARD},  # type: ignore[typeddict-item]
    )
    assert declined.status == "failed"
    assert declined.failure_code is not None
    held = client.payments.create(
        amount=900,
        currency="USD",
        merchant_account_id=shop.id,
        capture="manual",
        source={"card": CARD},  # type: ignore[typeddict-item]
    )
    canceled = client.payments.cancel(held.id)
    assert canceled.status == "canceled"
    assert canceled.amount_capturable == 0
    with pytest.raises(ConflictError):
        client.payments.capture(held.id)


def test_a_payout_from_a_wallet(client: Paycore, uid: str) -> None:
    """A payout debits the wallet and is listed by wallet."""
    wallet = client.accounts.create(id=f"{uid}-w", currency="USD")
    _fund(client, uid, wallet.id, 2_000)
    payout = client.payouts.create(
        wallet_account_id=wallet.id,
        amount=1_500,
        currency="USD",
        destination="DE89370400440532013000",
    )
    assert payout.status == "paid"
    assert payout.amount == 1_500
    assert client.payouts.retrieve(payout.id) == payout
    assert [p.id for p in client.payouts.list(wallet_account_id=wallet.id)] == [payout.id]
    assert client.accounts.retrieve(wallet.id).balance.available == 500


def test_errors_are_typed_by_code(client: Paycore, live_server: LiveServer, uid: str) -> None:
    """Each refusal raises its family's class with the server's code, status and body."""
    poor = client.accounts.create(id=f"{uid}-p", currency="USD", flags={"no_overdraft": True})
    rich = client.accounts.create(id=f"{uid}-r", currency="USD")
    with pytest.raises(InsufficientFundsError) as funds:
        client.transfers.create(
            id=f"{uid}-t",
            debit_account_id=poor.id,
            credit_account_id=rich.id,
            amount=1,
            currency="USD",
        )
    assert (funds.value.code, funds.value.status) == ("insufficient_funds", 409)
    assert b'"insufficient_funds"' in funds.value.body

    with pytest.raises(NotFoundError) as missing:
        client.accounts.retrieve(f"{uid}-nobody")
    assert missing.value.code == "account_not_found"
    assert f"{uid}-nobody" in missing.value.detail

    with pytest.raises(InvalidRequestError) as invalid:
        client.accounts.create(currency="usd")
    assert (invalid.value.code, invalid.value.status) == ("invalid_request", 422)

    with pytest.raises(ConflictError) as taken:
        client.accounts.create(id=poor.id, currency="EUR")
    assert taken.value.code == "account_exists_with_different_fields"

    stranger = Paycore("pk_live_nope_0000", base_url=live_server.base_url)
    with stranger, pytest.raises(AuthenticationError) as auth:
        stranger.accounts.retrieve(poor.id)
    assert (auth.value.code, auth.value.status) == ("unauthorized", 401)

    with Paycore(live_server.read_key, base_url=live_server.base_url) as reader:
        assert reader.accounts.retrieve(poor.id).id == poor.id
        with pytest.raises(PermissionDeniedError) as scope:
            reader.accounts.create(currency="USD")
    assert scope.value.code == "forbidden_scope"


def test_an_idempotency_key_replays_and_refuses_another_body(client: Paycore, uid: str) -> None:
    """The same key and body open one account; the key with another body is refused."""
    first = client.accounts.create(currency="USD", idempotency_key=f"{uid}-k")
    again = client.accounts.create(currency="USD", idempotency_key=f"{uid}-k")
    assert again.id == first.id  # an id derived from the key: one account, not two
    with pytest.raises(IdempotencyError) as reused:
        client.accounts.create(currency="EUR", idempotency_key=f"{uid}-k")
    assert reused.value.code == "idempotency_key_reused"
    different = client.accounts.create(currency="USD")
    assert different.id != first.id  # each call without a key gets a fresh one
