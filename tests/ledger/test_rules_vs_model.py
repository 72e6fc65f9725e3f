"""The pure rules agree with the reference model on random sequences of batches."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from paycore.ledger.model import AccountFlags, AccountRequest, TransferRequest
from paycore.ledger.rules import WorkingSet, new_account
from reference_model import KEPT, LedgerModel
from strategies import transfer_batches

NS = 1_000_000_000
ACCOUNTS = (
    AccountRequest("bank", "USD"),
    AccountRequest("w1", "USD", flags=AccountFlags(no_overdraft=True, history=True)),
    AccountRequest("w2", "USD", flags=AccountFlags(no_overdraft=True)),
    AccountRequest("credit", "USD", flags=AccountFlags(credit_limit=250, history=True)),
    AccountRequest("bank-eur", "EUR"),
    AccountRequest("w-eur", "EUR", flags=AccountFlags(no_overdraft=True)),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[list[TransferRequest], int]]:
    """Up to 8 batches, each followed by a clock step (ns) before the expiry sweep.

    Batches are drawn against a shadow model so that later ones post, void and retry
    what earlier ones created.
    """
    shadow = LedgerModel()
    shadow.create_accounts(list(ACCOUNTS))
    sent: dict[str, TransferRequest] = {}
    script = []
    now = 0
    for n in range(draw(st.integers(1, 8))):
        holds = {i: t.amount for i, t in shadow.transfers.items() if t.flags.pending}
        batch = draw(
            transfer_batches(
                prefix=f"b{n}",
                accounts={i: a.currency for i, a in shadow.accounts.items()},
                holds=holds,
                open_holds=[i for i, h in shadow.holds.items() if h.status == "pending"],
                transfers=sorted(set(shadow.transfers) - set(holds)),
                sent=sent,
                max_size=8,
            )
        )
        for outcome, request in zip(shadow.apply_batch(batch, now), batch, strict=True):
            if outcome.ok or outcome.code in KEPT:  # refused ids are resent too
                sent.setdefault(request.id, request)
        step = draw(st.sampled_from([0, NS // 2, NS, 3 * NS, 61 * NS]))
        script.append((batch, step))
    return script


@given(scripts())
def test_working_set_matches_the_reference_model(
    script: list[tuple[list[TransferRequest], int]],
) -> None:
    """Result codes, amounts, counters, hold statuses, expiries and history agree item by item."""
    now = 1_000 * NS
    accounts = [new_account(r, None, i + 1).account for i, r in enumerate(ACCOUNTS)]
    ws = WorkingSet([a for a in accounts if a], [], [], now=now, last_timestamp=10)
    model = LedgerModel()
    model.create_accounts(list(ACCOUNTS))
    last = ws.last_timestamp
    for batch, step in script:
        results = ws.apply_transfers(batch)
        expected = model.apply_batch(batch, ws.now)
        for request, got, want in zip(batch, results, expected, strict=True):
            code = None if got.code is None else got.code.value
            assert (got.id, code, got.exists) == (request.id, want.code, want.exists), request
            if got.ok and not got.exists:
                assert got.transfer is not None
                assert got.transfer.amount == model.transfers[got.id].amount
                assert got.transfer.timestamp > last
                last = got.transfer.timestamp
                model.stamp(got.id, got.transfer.timestamp)
        ws.now += step
        expired = {state.transfer.id for state in ws.expire_due()}
        assert expired == model.expire(ws.now)
        for account_id, m in model.accounts.items():
            assert ws.accounts[account_id].counters() == m.counters(), account_id
        assert {i: p.status.value for i, p in ws.pendings.items()} == {
            i: h.status for i, h in model.holds.items()
        }
    assert {t.id for t in ws.created} == set(model.transfers)
    history = defaultdict(list)
    for record in ws.history:
        history[record.account_id].append(
            (
                record.debits_pending,
                record.debits_posted,
                record.credits_pending,
                record.credits_posted,
            )
        )
    assert {i: history[i] for i in model.history} == model.history
