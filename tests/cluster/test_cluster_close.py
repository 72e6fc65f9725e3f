"""Closing over four shards: a balance refuses the close; ``transfer_balance_to`` on the
same shard moves it and closes in one transaction; on another shard it is refused with
``cross_shard_close_unsupported`` (decided from the ids, before anything is read), as is
a reserved target. The same through ``execute_idempotent``."""

from __future__ import annotations

from typing import Any

from cluster_support import open_accounts

from paycore.cluster.router import ShardedStore
from paycore.errors import ErrorCode
from paycore.ledger.rules import AccountResult
from paycore.ops.audit import audit_cluster
from paycore.storage.apply import remainder_transfer
from paycore.storage.base import (
    CloseAccount,
    Idempotency,
    ReserveTransferIds,
    StoredResponse,
)


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


async def test_a_target_on_another_shard_is_refused_and_nothing_moves(
    cluster: ShardedStore, wallets: dict[str, list[str]]
) -> None:
    a, b = wallets["shard-0"][0], wallets["shard-2"][0]
    for to in (b, "clearing:shard-0:shard-2:USD", "psp:shard-0:acq:USD"):
        refused = await cluster.execute(CloseAccount(a, transfer_balance_to=to))
        expected = (
            ErrorCode.INVALID_REQUEST if ":" in to else ErrorCode.CROSS_SHARD_CLOSE_UNSUPPORTED
        )
        assert refused.code is expected, refused
    assert (
        "different shards" in (await cluster.execute(CloseAccount(a, transfer_balance_to=b))).detail
    )
    idem = Idempotency("default:close-x", "fp", _render)
    answer, replayed = await cluster.execute_idempotent(
        CloseAccount(a, transfer_balance_to=b), idem
    )
    assert (answer.body, replayed) == (b"cross_shard_close_unsupported", False)
    found = await cluster.get_accounts([a, b])
    assert not found[a].flags.closed
    assert (found[a].balance, found[b].balance) == (10_000, 10_000)


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


async def test_an_empty_account_is_judged_by_its_target_s_shard_too(
    cluster: ShardedStore,
) -> None:
    """The cross-shard refusal comes from the ids alone, even when nothing would move:
    the answer does not depend on a balance the caller may not know yet."""
    await open_accounts(cluster, ["empty-1"])
    home = cluster.shard_for("empty-1")
    far = next(f"e{i}" for i in range(99) if cluster.shard_for(f"e{i}") != home)
    near = next(f"e{i}" for i in range(99) if cluster.shard_for(f"e{i}") == home)
    refused = await cluster.execute(CloseAccount("empty-1", transfer_balance_to=far))
    assert refused.code is ErrorCode.CROSS_SHARD_CLOSE_UNSUPPORTED
    assert (await cluster.execute(CloseAccount("empty-1", transfer_balance_to=near))).ok


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
