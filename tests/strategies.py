"""Hypothesis strategies for paycore values: ids, amounts, account requests, transfer batches.

The batch strategy takes the state a test already built (known accounts, holds and
sent requests) so that generated items hit real rows most of the time, and every
rejection path some of the time.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.money import MAX_AMOUNT

__all__ = [
    "ID_ALPHABET",
    "account_requests",
    "amounts",
    "invalid_amounts",
    "invalid_ids",
    "transfer_batches",
    "valid_ids",
]

ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"

valid_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64)
invalid_ids = st.one_of(
    st.just(""),
    st.text(alphabet=ID_ALPHABET, min_size=65, max_size=80),
    st.builds(
        lambda a, bad, b: a + bad + b,
        st.text(alphabet=ID_ALPHABET, max_size=5),
        # One "/" may be a tenant's namespace ("t1/a1", paycore.ledger.tenancy); two never.
        st.sampled_from([" ", "//", "é", "#", "\t", "?", "\x00"]),
        st.text(alphabet=ID_ALPHABET, max_size=5),
    ),
)

amounts = st.integers(0, 11).flatmap(
    lambda n: (
        st.sampled_from([2**62, MAX_AMOUNT])  # now and then, to reach overflow
        if n == 0
        else st.integers(1, 500)
    )
)
invalid_amounts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=MAX_AMOUNT + 1),
    st.just(True),
    st.floats(allow_nan=False, min_value=0.5, max_value=1e6),
)

account_flags = st.one_of(
    st.just(AccountFlags()),
    st.just(AccountFlags(no_overdraft=True)),
    st.builds(AccountFlags, credit_limit=st.integers(0, 1_000)),
    st.builds(
        AccountFlags,
        no_overdraft=st.booleans(),
        history=st.just(True),
    ),
)


def account_requests(
    ids: Sequence[str], currencies: Sequence[str] = ("USD", "USD", "EUR", "JPY")
) -> st.SearchStrategy[AccountRequest]:
    """Mostly valid requests over a small id pool (so that repeats happen), a few invalid."""
    valid = st.builds(
        AccountRequest,
        id=st.sampled_from(list(ids)),
        currency=st.sampled_from(list(currencies)),
        code=st.sampled_from([0, 0, 0, 7]),
        flags=account_flags,
        metadata=st.sampled_from([None, None, {"owner": "ann"}]),
    )
    invalid = st.one_of(
        st.builds(AccountRequest, id=invalid_ids, currency=st.just("USD")),
        st.builds(AccountRequest, id=st.sampled_from(list(ids)), currency=st.just("usd")),
        st.builds(
            AccountRequest,
            id=st.sampled_from(list(ids)),
            currency=st.just("USD"),
            flags=st.just(AccountFlags(no_overdraft=True, credit_limit=5)),
        ),
        st.builds(
            AccountRequest, id=st.sampled_from(list(ids)), currency=st.just("EUR"), code=st.just(-1)
        ),
    )
    return st.one_of(valid, valid, valid, valid, invalid)


def _chance(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.integers(0, one_in - 1)) == 0


@st.composite
def transfer_batches(
    draw: st.DrawFn,
    *,
    prefix: str,
    accounts: dict[str, str],
    holds: dict[str, int],
    open_holds: Sequence[str],
    transfers: Sequence[str],
    sent: dict[str, TransferRequest],
    max_size: int = 6,
) -> list[TransferRequest]:
    """A batch of up to ``max_size`` items: plain and pending transfers, posts and voids
    of known holds, retries of sent ids, duplicates, invalid items, linked chains.

    ``accounts`` maps known account ids to their currencies; ``holds`` maps known
    hold ids to their amounts and ``open_holds`` lists those still pending;
    ``transfers`` are known ids that are not holds; ``sent`` maps ids to the request
    that first used them (a retry resends it as is, or with one field changed).
    """
    size = draw(st.integers(1, max_size))
    batch: list[TransferRequest] = []
    batch_holds: dict[str, int] = {}
    for i in range(size):
        kind = draw(
            st.sampled_from(
                ["plain"] * 4 + ["pending"] * 3 + ["post"] * 2 + ["void", "retry", "invalid"]
            )
        )
        item = _item(
            draw,
            kind,
            f"{prefix}-{i}",
            accounts=accounts,
            holds={**holds, **batch_holds},
            open_holds=[*open_holds, *batch_holds],
            transfers=transfers,
            sent={**sent, **{r.id: r for r in batch}},
        )
        if _chance(draw, 6):
            item = _with(item, flags=_with_flags(item.flags, linked=True))
        if item.flags.pending and item.amount is not None:
            batch_holds[item.id] = item.amount
        batch.append(item)
    return batch


def _item(
    draw: st.DrawFn,
    kind: str,
    fresh_id: str,
    *,
    accounts: dict[str, str],
    holds: dict[str, int],
    open_holds: Sequence[str],
    transfers: Sequence[str],
    sent: dict[str, TransferRequest],
) -> TransferRequest:
    if kind == "retry" and sent:
        original = sent[draw(st.sampled_from(sorted(sent)))]
        if _chance(draw, 2):
            return original  # the very same request again
        return draw(
            st.sampled_from(
                [
                    _with(original, amount=(original.amount or 1) + 1),
                    _with(original, code=original.code + 1),
                    _with(original, metadata={"changed": True}),
                    _with(original, amount=None, currency=None),  # fewer fields: may match
                ]
            )
        )
    if kind in ("post", "void") and holds:
        if open_holds and not _chance(draw, 4):
            pending_id = draw(st.sampled_from(sorted(open_holds)))
        elif _chance(draw, 2):
            pending_id = draw(st.sampled_from(sorted(holds)))
        else:
            pending_id = draw(st.sampled_from([*transfers, "no-such-hold", "not an id"]))
        held = holds.get(pending_id, 10)
        if kind == "post":
            amount = draw(st.one_of(st.none(), st.integers(1, held + 2)))
            flags = TransferFlags(post_pending=True)
        else:
            amount = draw(st.sampled_from([None, None, None, held, max(held - 1, 1)]))
            flags = TransferFlags(void_pending=True)
        return TransferRequest(
            id=fresh_id,
            pending_id=pending_id,
            amount=amount,
            flags=flags,
            currency=draw(st.sampled_from([None, None, None, "USD", "EUR"])),
            code=draw(st.sampled_from([0, 0, 3])),
        )
    if kind == "invalid":
        return draw(_invalid_items(fresh_id, sorted(accounts)))
    if len(accounts) < 2:
        return TransferRequest(id=fresh_id, debit_account_id="x", credit_account_id="y", amount=1)
    # Mostly two different accounts of one currency; now and then any pair, or a ghost.
    debit = draw(st.sampled_from(sorted(accounts)))
    peers = sorted(a for a, c in accounts.items() if c == accounts[debit] and a != debit)
    if not peers or _chance(draw, 12):
        peers = sorted(accounts)
    credit = draw(st.sampled_from(peers))
    if _chance(draw, 30):
        debit = "ghost"
    pending = kind == "pending"
    if pending:
        timeout = draw(st.sampled_from([0, 0, 1, 2, 5, 60]))
    else:
        timeout = 1 if _chance(draw, 30) else 0
    return TransferRequest(
        id=fresh_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=draw(amounts),
        currency=None if draw(st.integers(0, 5)) else draw(st.sampled_from(["USD", "EUR"])),
        code=draw(st.sampled_from([0, 0, 0, 1, 2])),
        flags=TransferFlags(pending=pending, balancing=_chance(draw, 6)),
        timeout_seconds=timeout,
        metadata=draw(st.sampled_from([None, None, None, {"ref": fresh_id}])),
    )


def _invalid_items(fresh_id: str, accounts: Sequence[str]) -> st.SearchStrategy[TransferRequest]:
    a = accounts[0] if accounts else "a"
    b = accounts[-1] if accounts else "b"
    base = TransferRequest(id=fresh_id, debit_account_id=a, credit_account_id=b, amount=5)
    return st.one_of(
        invalid_ids.map(lambda bad: _with(base, id=bad)),
        invalid_amounts.map(lambda bad: _with(base, amount=bad)),
        st.sampled_from([-1, 2**31]).map(lambda t: _with(base, timeout_seconds=t)),
        st.just(_with(base, flags=TransferFlags(pending=True, post_pending=True))),
        st.just(_with(base, flags=TransferFlags(post_pending=True, void_pending=True))),
        st.just(_with(base, debit_account_id=None)),
        st.just(_with(base, amount=None)),
        st.just(_with(base, pending_id="p")),
        st.just(_with(base, pending_id="not an id")),
        st.sampled_from([-1, 2**31, 2**63]).map(lambda c: _with(base, code=c)),
        st.just(_with(base, credit_account_id=a)),
        st.just(TransferRequest(id=fresh_id, flags=TransferFlags(post_pending=True))),
        st.just(_with(base, timeout_seconds=3)),
    )


def _with(request: TransferRequest, **changes: Any) -> TransferRequest:
    fields = {f: getattr(request, f) for f in request.__struct_fields__}
    fields.update(changes)
    return TransferRequest(**fields)


def _with_flags(flags: TransferFlags, **changes: bool) -> TransferFlags:
    fields = {f: getattr(flags, f) for f in flags.__struct_fields__}
    fields.update(changes)
    return TransferFlags(**fields)
