"""The process test_saga_crash kills: one cross-shard operation, SIGKILLed at one step.

Usage: ``python saga_crash_child.py CONFIG SCENARIO KILL_POINT``

``CONFIG`` is a paycore TOML file (4 SQLite files or 4 PostgreSQL databases, and a short
``relay_lease_seconds``), read as ``paycore serve --config`` reads it. The child builds the
real store from it, creates its accounts and runs the scenario's prelude (funding, the hold
a post or void resolves), each step finished as a request finishes it. It then prints
``armed``, wraps the shard stores' ``execute`` so that right after the kill point's
command returned (its transaction committed) on its shard the process SIGKILLs itself
(a command the operation runs in parallel may be held back, so that the kill lands
before it), and runs the scenario's operation. Reaching the end alive prints
``survived`` (the kill point was never met: the test fails).

The scenarios, their requests and kill points are defined here and imported by the test,
so the parent replays exactly what the child sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import load_settings
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.storage.base import (
    CloseAccount,
    CreateAccounts,
    CreateTransfers,
    DecideChain,
    ExpirePending,
    FinishChain,
    PrepareChain,
    SetOutboxStates,
)
from paycore.workers.relay import RelayWorker

USD = "USD"
LEASE_SECONDS = 0.5  # relay_lease_seconds: the dead request's rows and chains free soon
EXPIRY_SECONDS = 1
# index into the store's shard names; ``D`` owes (it may go negative), on B's shard
SHARD_OF = {"bank": 0, "A": 0, "B": 1, "C": 2, "D": 1}


def placed(store: ShardedStore) -> dict[str, str]:
    """The scenario's accounts by role (``bank`` funds ``A`` on its own shard; ``B`` and
    ``C`` live on two other shards, ``D`` beside ``B``): the same fixed ids in the child
    and the parent."""
    names = list(store.shards)
    found: dict[str, str] = {}
    i = 0
    while len(found) < len(SHARD_OF):
        candidate = f"xc{i}"
        shard = names.index(store.shard_for(candidate))
        role = next((r for r, s in SHARD_OF.items() if s == shard and r not in found), None)
        if role is not None:
            found[role] = candidate
        i += 1
    return found


def shard_of(store: ShardedStore, role: str) -> str:
    return list(store.shards)[SHARD_OF[role]]


def account_requests(ids: dict[str, str]) -> tuple[AccountRequest, ...]:
    """The bank and D may go negative; every wallet is no-overdraft (B starts empty)."""
    return tuple(
        AccountRequest(ids[role], USD, flags=AccountFlags(no_overdraft=role not in ("bank", "D")))
        for role in ("bank", "A", "B", "C", "D")
    )


def _pending(**kw: Any) -> TransferFlags:
    return TransferFlags(pending=True, **kw)


def batches(ids: dict[str, str]) -> dict[str, Any]:
    """Every request batch the scenarios send, by name (a close is one command)."""
    a, b, c = ids["A"], ids["B"], ids["C"]
    return {
        "fund": (TransferRequest("fund", ids["bank"], a, 1000, USD),),
        "hold": (TransferRequest("hold", a, b, 300, USD, flags=_pending(), timeout_seconds=3600),),
        "short_hold": (
            TransferRequest(
                "hold", a, b, 300, USD, flags=_pending(), timeout_seconds=EXPIRY_SECONDS
            ),
        ),
        "post": (
            TransferRequest(
                "post", pending_id="hold", amount=120, flags=TransferFlags(post_pending=True)
            ),
        ),
        "void": (
            TransferRequest("void", pending_id="hold", flags=TransferFlags(void_pending=True)),
        ),
        "pay": (TransferRequest("pay", a, b, 250, USD),),
        # B is empty and no-overdraft: c2 can only pass after c1 credited it.
        "chain": (
            TransferRequest("c1", a, b, 100, USD, flags=TransferFlags(linked=True)),
            TransferRequest("c2", b, c, 60, USD, flags=TransferFlags(linked=True)),
            TransferRequest("c3", a, c, 30, USD, flags=_pending(), timeout_seconds=3600),
        ),
        # A chain resolving a cross-shard hold: B spends what the partial post credits it.
        "chain_post": (
            TransferRequest(
                "cp1",
                pending_id="hold",
                amount=200,
                flags=TransferFlags(post_pending=True, linked=True),
            ),
            TransferRequest("cp2", b, c, 150, USD),
        ),
        # A's whole balance to B, on another shard, and A closed (cluster.close_across).
        "close": CloseAccount(a, transfer_balance_to=b),
        # D owes B (its shard); A, on another shard, pays D's debt and D closes: step 1 is
        # A's hold (A's shard), step 2 credits and closes D (B's), step 3 posts A's hold.
        "lend": (TransferRequest("lend", ids["D"], b, 400, USD),),
        "close_debt": CloseAccount(ids["D"], transfer_balance_to=a),
    }


@dataclass(frozen=True)
class Scenario:
    prelude: tuple[str, ...]  # batches run (and finished) before the kill is armed
    operation: str  # the batch the kill lands in, or "expire"


SCENARIOS = {
    "hold": Scenario(("fund",), "hold"),
    "post": Scenario(("fund", "hold"), "post"),
    "void": Scenario(("fund", "hold"), "void"),
    "expiry": Scenario(("fund", "short_hold"), "expire"),
    "transfer": Scenario(("fund",), "pay"),
    "chain": Scenario(("fund",), "chain"),
    "chain_post": Scenario(("fund", "hold"), "chain_post"),
    "close": Scenario(("fund",), "close"),
    "close_debt": Scenario(("fund", "lend"), "close_debt"),
}

Predicate = Callable[[Any, Any], bool]  # (command, result) -> kill now


def _creates(command: Any) -> bool:
    return isinstance(command, CreateTransfers)


def _resolves(command: Any) -> bool:
    return _creates(command) and any(
        r.flags.post_pending or r.flags.void_pending for r in command.requests
    )


@dataclass(frozen=True)
class KillPoint:
    """Kill right after a command that ``kill`` matches returned on the shard of ``role``.

    ``hold_back``: (role, command) that the operation runs in parallel with the killing
    one, held back so that the kill lands before it committed: until ``release``
    (role, command) returned, or, without ``release``, for good (the kill comes first)."""

    role: str
    kill: Predicate
    hold_back: tuple[str, Predicate] | None = None
    command: str = "CreateTransfers"  # the killing command's type, as the child prints it
    release: tuple[str, Predicate] | None = None


HOLD_BACK_SECONDS = 10.0  # at most: a kill point never met ends as "survived", not hung


def _prepares(c: Any, _: Any = None) -> bool:
    return isinstance(c, PrepareChain)


def _decides(c: Any, _: Any = None) -> bool:
    return isinstance(c, DecideChain)


def _finishes(c: Any, _: Any = None) -> bool:
    return isinstance(c, FinishChain)


def _posts_saga_hold(c: Any, _: Any = None) -> bool:
    """A transfer's step 3: its source posts (or voids) the saga's hold, row -> final."""
    return _creates(c) and c.settlement and bool(c.outbox)


KILL_POINTS: dict[str, KillPoint] = {
    # a saga's step 1: the source's hold and its outbox row
    "step1": KillPoint("A", lambda c, _: _creates(c) and any(w.insert for w in c.outbox)),
    # a close's step 1: the account closed, its balance held, the outbox row
    "close_step1": KillPoint(
        "A",
        lambda c, _: isinstance(c, CloseAccount) and c.remainder_hold is not None,
        command="CloseAccount",
    ),
    # step 2: the target's credit (or pending) leg, its refusal kept for good (for a debt
    # paid across shards: the debtor credited and closed)
    "step2": KillPoint("B", lambda c, _: _creates(c) and c.refusals_key is not None),
    # a client's hold: its row held_pending -> open on the source
    "open": KillPoint("A", lambda c, _: isinstance(c, SetOutboxStates), command="SetOutboxStates"),
    # a transfer's step 3: the source posts its hold, row -> completed
    "step3": KillPoint("A", _posts_saga_hold),
    # a client's post or void of a cross-shard hold, on the source (row -> resolving)
    "resolve": KillPoint("A", lambda c, _: _resolves(c) and not c.settlement),
    # the target's same post or void (or an expiry's void) of its leg
    "mirror": KillPoint("B", lambda c, _: _creates(c) and c.settlement and c.refusals_key is None),
    # the source's row resolving -> resolved
    "resolved": KillPoint(
        "A", lambda c, _: isinstance(c, SetOutboxStates), command="SetOutboxStates"
    ),
    # the source's expiry job expired the hold (row -> resolving)
    "expire": KillPoint(
        "A", lambda c, r: isinstance(c, ExpirePending) and bool(r), command="ExpirePending"
    ),
    # a chain (coordinator A's shard; participants B's and C's, prepared in parallel):
    # B prepared, C not yet
    "prepare_B": KillPoint("B", _prepares, ("C", _prepares), "PrepareChain"),
    # both prepared (C after B), no decision yet
    "prepare_C": KillPoint(
        "C", _prepares, ("C", _prepares), "PrepareChain", release=("B", _prepares)
    ),
    # decided (committed), neither participant finished
    "decide": KillPoint("A", _decides, command="DecideChain"),
    # B finished, C still prepared
    "finish_B": KillPoint("B", _finishes, ("C", _finishes), "FinishChain"),
    # every leg applied; A's item posted its saga's hold (step 3), B's not yet
    "chain_step3": KillPoint("A", _posts_saga_hold, ("B", _posts_saga_hold)),
    # a chain posting A's hold to B, then B -> C (coordinator B's shard; A's and C's
    # participants): A prepared, C not yet; decided; A finished, C not yet; B's item
    # posted its saga's hold (step 3, the chain's last step)
    "prepare_A": KillPoint("A", _prepares, ("C", _prepares), "PrepareChain"),
    "decide_B": KillPoint("B", _decides, command="DecideChain"),
    "finish_A": KillPoint("A", _finishes, ("C", _finishes), "FinishChain"),
    "step3_B": KillPoint("B", _posts_saga_hold),
}


def _wrap(store: ShardedStore, role: str, execute: Callable[..., Any]) -> None:
    """Put ``execute(inner, command)`` in front of the ``execute`` of ``role``'s shard."""
    shard = store.shards[shard_of(store, role)]
    inner = shard.execute

    async def wrapped(command: Any) -> Any:
        return await execute(inner, command)

    shard.execute = wrapped  # type: ignore[method-assign]


def arm(store: ShardedStore, point: str) -> None:
    """SIGKILL this process right after ``point``'s command returned on its shard."""
    spec = KILL_POINTS[point]
    released = asyncio.Event()
    if spec.hold_back is not None:
        held = spec.hold_back[1]

        async def hold_back(inner: Callable[..., Any], command: Any) -> Any:
            if held(command, None):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), HOLD_BACK_SECONDS)
            return await inner(command)

        _wrap(store, spec.hold_back[0], hold_back)
    if spec.release is not None:
        release = spec.release[1]

        async def release_after(inner: Callable[..., Any], command: Any) -> Any:
            result = await inner(command)
            if release(command, result):
                released.set()
            return result

        _wrap(store, spec.release[0], release_after)
    name = shard_of(store, spec.role)

    async def kill_after(inner: Callable[..., Any], command: Any) -> Any:
        result = await inner(command)
        if spec.kill(command, result):
            print(f"killed after {type(command).__name__} on {name}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    _wrap(store, spec.role, kill_after)


async def run_operation(store: ShardedStore, name: str, requests: Any) -> None:
    if isinstance(requests, CloseAccount):
        await store.execute(requests)
        return
    if name != "expire":
        await store.execute(CreateTransfers(requests))
        return
    # The source's expiry job (as the maintenance worker runs it), then the relay that
    # voids the target's leg (the request that made the hold is long gone).
    await asyncio.sleep(EXPIRY_SECONDS + 0.2)
    expired = await store.execute(ExpirePending())
    assert expired == ["hold"], expired
    await RelayWorker(store, lease_seconds=LEASE_SECONDS).drain()


async def main(config: Path, scenario_name: str, point: str) -> None:
    settings = load_settings(config, env={})  # the file only: no PAYCORE_* from outside
    assert settings.relay_lease_seconds == LEASE_SECONDS
    store = build_store(settings)
    await store.start()
    ids = placed(store)
    results = await store.execute(CreateAccounts(account_requests(ids)))
    assert all(r.ok for r in results), results
    scenario = SCENARIOS[scenario_name]
    sent = batches(ids)
    for name in scenario.prelude:
        results = await store.execute(CreateTransfers(sent[name]))
        assert all(r.ok and not r.in_flight for r in results), (name, results)
    print("armed", flush=True)
    arm(store, point)
    await run_operation(store, scenario.operation, sent.get(scenario.operation))
    print("survived", flush=True)
    await store.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
