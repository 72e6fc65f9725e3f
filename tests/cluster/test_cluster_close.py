"""Closing over four shards: a balance refuses the close; ``transfer_balance_to`` on the
same shard moves it and closes in one transaction; on another shard the close rides on
step 1 of the remainder's saga (``paycore.cluster.close_across``) and answers as one
shard would: closed with the money moved, or the target's refusal with nothing changed.
A reserved target is refused; a debt is paid from another shard the same way
(test_cluster_close_debt.py). The same through ``execute_idempotent``."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_support import move, open_accounts

from paycore.cluster.router import ShardedStore
from paycore.errors import ErrorCode, UnavailableError
from paycore.ledger.model import TransferStatus
from paycore.ledger.rules import AccountResult
from paycore.ops.audit import audit_cluster
from paycore.storage.apply import remainder_transfer
from paycore.storage.base import (
    CloseAccount,
    CreateTransfers,
    Idempotency,
    ReserveTransferIds,
    StoredResponse,
)
from paycore.workers.relay import RelayWorker


def _render(result: Any) -> StoredResponse:
    assert isinstance(result, AccountResult)
    return StoredResponse(200 if result.ok else 409, (result.code or "ok").encode())


async def test_a_balance_goes_to_an_account_on_the_same_shard(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    a, b = wallets["shard-1"]
    refused = await cluster.execute(CloseAccount(a))
    assert refused.code is ErrorCode.ACCOUNT_HAS_BALANCE
    closed = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert closed.ok, closed
    found = await cluster.get_accounts([a, b])
    assert found[a].flags.closed
    assert found[a].balance == 0
    assert found[b].balance == 20_000
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_target_on_another_shard_takes_the_balance_and_the_account_closes(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    a, b = wallets["shard-0"][0], wallets["shard-2"][0]
    for to in ("clearing:shard-0:shard-2:USD", "psp:shard-0:acq:USD"):
        refused = await cluster.execute(CloseAccount(a, transfer_balance_to=to))
        assert refused.code is ErrorCode.INVALID_REQUEST, refused
    closed = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert closed.ok, closed
    assert closed.account is not None
    assert (closed.account.flags.closed, closed.account.balance) == (True, 0)
    assert closed.account.debits_pending == 0
    found = await cluster.get_accounts([a, b])
    assert found[a].flags.closed
    assert (found[a].balance, found[b].balance) == (0, 20_000)
    moved_id = remainder_transfer(found[a], b).id
    moved = (await cluster.get_transfers([moved_id]))[moved_id]
    assert (moved.transfer.debit_account_id, moved.transfer.credit_account_id) == (a, b)
    assert (moved.transfer.amount, moved.status) == (10_000, TransferStatus.POSTED)
    again = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert (again.ok, again.exists) == (True, True)
    (refused,) = await cluster.execute(CreateTransfers((move("after-close", b, a, 1),)))
    assert refused.code is ErrorCode.ACCOUNT_CLOSED
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_target_on_another_shard_that_cannot_take_it_changes_nothing(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """B missing, closed, or of another currency: the answer one shard gives, nothing moved,
    A open; the same for a debt, which another shard's account then pays."""
    a, b = wallets["shard-1"][0], wallets["shard-3"][0]
    far = next(f"nob{i}" for i in range(99) if cluster.shard_for(f"nob{i}") != "shard-1")
    missing = await cluster.execute(CloseAccount(a, transfer_balance_to=far))
    assert missing.code is ErrorCode.ACCOUNT_NOT_FOUND, missing
    assert f"transfer_balance_to {far!r}" in missing.detail
    euro = next(f"eur{i}" for i in range(99) if cluster.shard_for(f"eur{i}") != "shard-1")
    await open_accounts(cluster, [euro], currency="EUR")
    other = await cluster.execute(CloseAccount(a, transfer_balance_to=euro))
    assert other.code is ErrorCode.CURRENCY_MISMATCH, other
    emptied = await cluster.execute(CloseAccount(wallets["shard-3"][1], transfer_balance_to=b))
    assert emptied.ok  # same shard: b takes it
    done = await cluster.execute(CloseAccount(b, transfer_balance_to=wallets["shard-0"][1]))
    assert done.ok
    shut = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert shut.code is ErrorCode.ACCOUNT_CLOSED, shut
    found = await cluster.get_accounts([a])
    assert not found[a].flags.closed
    assert found[a].balance == 10_000
    debtor = next(f"debt{i}" for i in range(99) if cluster.shard_for(f"debt{i}") == "shard-1")
    await open_accounts(cluster, [debtor], no_overdraft=False)
    (lent,) = await cluster.execute(CreateTransfers((move("lend", debtor, a, 5),)))
    assert lent.ok
    owes = await cluster.execute(CloseAccount(debtor, transfer_balance_to=b))
    assert owes.code is ErrorCode.ACCOUNT_CLOSED, owes  # b is closed: nothing paid
    paid = await cluster.execute(CloseAccount(debtor, transfer_balance_to=wallets["shard-0"][1]))
    assert paid.ok, paid  # a debt paid from another shard: tests/cluster/test_cluster_close_debt.py
    found = await cluster.get_accounts([debtor, wallets["shard-0"][1]])
    assert (found[debtor].flags.closed, found[debtor].balance) == (True, 0)
    assert found[wallets["shard-0"][1]].balance == 30_000 - 5  # it took b's 20,000 above
    assert (await audit_cluster(cluster.shards)).ok


async def test_a_target_refusing_after_step_1_reopens_the_account(
    relay_path: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """The request stops after step 1 (A closed, its balance held): a retry answers 503
    while the saga is open; B is closed meanwhile, so the relay's credit is refused and
    its void reopens A with its money; the close then answers B's refusal."""
    cluster = relay_path
    a, b = wallets["shard-2"][0], wallets["shard-1"][0]
    with pytest.raises(UnavailableError):
        await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    found = await cluster.get_accounts([a])
    assert found[a].flags.closed
    assert found[a].debits_pending == 10_000
    with pytest.raises(UnavailableError):
        await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert (await cluster.execute(CloseAccount(b, transfer_balance_to=wallets["shard-1"][1]))).ok
    await RelayWorker(cluster, lease_seconds=0.001).drain()
    found = await cluster.get_accounts([a, b])
    assert not found[a].flags.closed
    assert (found[a].balance, found[a].debits_pending) == (10_000, 0)
    assert found[b].balance == 0
    answer = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert answer.code is ErrorCode.ACCOUNT_CLOSED, answer
    assert (await audit_cluster(cluster.shards)).ok


@pytest.mark.parametrize("elsewhere", [True, False], ids=["other-shard", "same-shard"])
async def test_an_account_reopened_by_a_refused_remainder_closes_again(
    relay_path: ShardedStore, wallets: dict[str, list[str]], elsewhere: bool
) -> None:
    """The close's first hold was voided (its target closed meanwhile) and the account
    reopened; a later close to another target moves the balance and closes it, under the
    next attempt's id (the voided hold keeps the first one), as if the first close had
    never been asked."""
    cluster = relay_path
    a, b = wallets["shard-2"][0], wallets["shard-1"][0]
    c = wallets["shard-3"][0] if elsewhere else wallets["shard-2"][1]
    with pytest.raises(UnavailableError):
        await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert (await cluster.execute(CloseAccount(b, transfer_balance_to=wallets["shard-1"][1]))).ok
    await RelayWorker(cluster, lease_seconds=0.001).drain()
    reopened = (await cluster.get_accounts([a]))[a]
    assert not reopened.flags.closed
    first = remainder_transfer(reopened, b).id
    assert await _status(cluster, first) is TransferStatus.VOIDED
    try:
        answer = await cluster.execute(CloseAccount(a, transfer_balance_to=c))
    except UnavailableError:  # across shards the relay path finishes the saga
        await RelayWorker(cluster, lease_seconds=0.001).drain()
        answer = await cluster.execute(CloseAccount(a, transfer_balance_to=c))
    assert answer.ok, answer
    found = await cluster.get_accounts([a, c])
    assert found[a].flags.closed
    assert found[a].balance == 0
    assert found[c].balance == 20_000
    second = remainder_transfer(reopened, c, attempt=1).id
    assert await _status(cluster, second) is TransferStatus.POSTED
    assert await _status(cluster, first) is TransferStatus.VOIDED
    assert (await audit_cluster(cluster.shards)).ok


async def _status(cluster: ShardedStore, transfer_id: str) -> TransferStatus | None:
    view = await cluster.get_transfer(transfer_id)
    return None if view is None else view.status


async def test_an_idempotent_close_with_a_target_moves_the_balance_once(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """The key on another shard than the accounts: the close runs once, then replays."""
    a, b = wallets["shard-3"]
    key = next(
        f"default:k{i}" for i in range(99) if cluster.shard_for(f"default:k{i}") != "shard-3"
    )
    idem = Idempotency(key, "fp", _render)
    first, replayed = await cluster.execute_idempotent(CloseAccount(a, transfer_balance_to=b), idem)
    assert (first.body, replayed) == (b"ok", False)
    again, replayed = await cluster.execute_idempotent(CloseAccount(a, transfer_balance_to=b), idem)
    assert (again, replayed) == (first, True)
    found = await cluster.get_accounts([a, b])
    assert found[a].flags.closed
    assert found[b].balance == 20_000


async def test_an_empty_account_closes_whatever_shard_its_target_is_on(
    cluster: ShardedStore,
) -> None:
    """With nothing to move the target is not used, as on one shard."""
    await open_accounts(cluster, ["empty-1", "empty-2"])
    home = cluster.shard_for("empty-1")
    far = next(f"e{i}" for i in range(99) if cluster.shard_for(f"e{i}") != home)
    assert (await cluster.execute(CloseAccount("empty-1", transfer_balance_to=far))).ok
    near = next(f"e{i}" for i in range(99) if cluster.shard_for(f"e{i}") == home)
    assert (await cluster.execute(CloseAccount("empty-2", transfer_balance_to=near))).ok


async def test_a_derived_id_bound_to_another_shard_refuses_the_close(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    """Transfer ids are unique across the cluster: if ``close_<hash>`` is reserved for a
    transfer stored elsewhere, the move is refused and nothing changes."""
    a, b = wallets["shard-2"]
    account = (await cluster.get_accounts([a]))[a]
    taken = remainder_transfer(account, b).id
    (bound,) = await cluster.shards["shard-2"].execute(
        ReserveTransferIds("shard-2", ((taken, "shard-0"),))
    )
    assert bound == "shard-0"
    refused = await cluster.execute(CloseAccount(a, transfer_balance_to=b))
    assert refused.code is ErrorCode.TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS
    assert "shard-0" in refused.detail
    found = await cluster.get_accounts([a, b])
    assert not found[a].flags.closed
    assert (found[a].balance, found[b].balance) == (10_000, 10_000)


async def test_an_idempotent_close_across_shards_runs_once_then_replays(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    a, b = wallets["shard-3"][0], wallets["shard-0"][0]
    idem = Idempotency("default:close-across", "fp", _render)
    first, replayed = await cluster.execute_idempotent(CloseAccount(a, transfer_balance_to=b), idem)
    assert (first.body, replayed) == (b"ok", False)
    again, replayed = await cluster.execute_idempotent(CloseAccount(a, transfer_balance_to=b), idem)
    assert (again, replayed) == (first, True)
    found = await cluster.get_accounts([a, b])
    assert found[a].flags.closed
    assert (found[a].balance, found[b].balance) == (0, 20_000)
