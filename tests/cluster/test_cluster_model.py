"""Hypothesis: random cross-shard transfers, closes and relay passes against a small model."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cluster_support import SHARDS, ClusterDatabases, counters, ids_on, move, open_accounts
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.cluster.router import ShardedStore
from paycore.cluster.settlement import Settlement
from paycore.cluster.topology import build_store
from paycore.ops.audit import audit_cluster
from paycore.storage.base import CloseAccount, CreateTransfers

FUNDING = 1_000
# Examples per backend. A PostgreSQL example costs ~5x a SQLite one (0.25 s: round
# trips on every step, four stores started and four databases emptied), so it runs
# half as many to keep the suite quick; the model checks the router's and the saga's
# rules, which are the same code on both backends.
EXAMPLES = {"sqlite": 40, "postgres": 20}

ops = st.lists(
    st.one_of(
        st.tuples(st.just("transfer"), st.integers(0, 7), st.integers(0, 7), st.integers(1, 700)),
        st.tuples(st.just("close"), st.integers(0, 7), st.just(0), st.just(0)),
        st.tuples(st.just("relay"), st.integers(0, 3), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@dataclass
class _Model:
    """Expected counters per wallet, open sagas per source shard, closed wallets."""

    wallets: list[str]
    shard_of: dict[str, str]
    counters: dict[str, list[int]] = field(default_factory=dict)  # dp dpo cp cpo
    closed: set[str] = field(default_factory=set)
    open_sagas: list[tuple[str, str, str, int]] = field(default_factory=list)  # id a b amount

    def available(self, account: str) -> int:
        dp, dpo, _, cpo = self.counters[account]
        return cpo - dpo - dp

    def relay(self, shard: str) -> None:
        keep = []
        for saga in self.open_sagas:
            _, a, b, amount = saga
            if self.shard_of[a] != shard:
                keep.append(saga)
                continue
            self.counters[a][0] -= amount
            if b not in self.closed:
                self.counters[a][1] += amount
                self.counters[b][3] += amount
        self.open_sagas = keep


async def _scenario(databases: ClusterDatabases, steps: list[tuple[str, int, int, int]]) -> None:
    store = build_store(databases.settings(synchronous="NORMAL"))
    store.drive_sagas = False  # this model checks the relay's steps; see test_cluster_stateful
    await store.start()
    try:
        await _run(store, steps)
    finally:
        await store.stop()


async def _run(store: ShardedStore, steps: list[tuple[str, int, int, int]]) -> None:
    wallets, banks = [], []
    for shard in SHARDS:
        bank, *pair = ids_on(store, shard, 3, prefix=f"m{shard[-1]}-")
        banks.append(bank)
        wallets += pair
    await open_accounts(store, banks, no_overdraft=False)
    await open_accounts(store, wallets)
    funding = [move(f"f-{w}", banks[i // 2], w, FUNDING) for i, w in enumerate(wallets)]
    assert all(r.ok for r in await store.execute(CreateTransfers(tuple(funding))))
    model = _Model(wallets, {w: store.shard_for(w) for w in wallets})
    model.counters = {w: [0, 0, 0, FUNDING] for w in wallets}
    relay = Settlement(store.shards, owner="model")
    for n, (kind, x, y, amount) in enumerate(steps):
        if kind == "transfer" and x != y:
            a, b = wallets[x], wallets[y]
            (r,) = await store.execute(CreateTransfers((move(f"t{n}", a, b, amount),)))
            if a in model.closed or b in model.closed:
                assert r.code == "account_closed", r
            elif amount > model.available(a):
                assert r.code == "insufficient_funds", r
            else:
                assert r.ok, r
                assert r.in_flight == (model.shard_of[a] != model.shard_of[b])
                if r.in_flight:
                    model.counters[a][0] += amount
                    model.open_sagas.append((r.id, a, b, amount))
                else:
                    model.counters[a][1] += amount
                    model.counters[b][3] += amount
        elif kind == "close":
            w = wallets[x]
            result = await store.execute(CloseAccount(w))
            dp, dpo, cp, cpo = model.counters[w]
            assert result.ok == (dp == 0 and cp == 0 and dpo == cpo)
            if result.ok:
                model.closed.add(w)
        elif kind == "relay":
            await relay.run_shard(SHARDS[x])
            model.relay(SHARDS[x])
        found = await store.get_accounts(wallets)
        assert {w: list(counters(found[w])) for w in wallets} == model.counters
    for shard in SHARDS:
        await relay.run_shard(shard)
        model.relay(shard)
    found = await store.get_accounts(wallets)
    assert {w: list(counters(found[w])) for w in wallets} == model.counters
    report = await audit_cluster(store.shards)
    assert report.ok, report.violations
    assert report.sagas_open == 0
    assert all(t.clearing_posted_net == 0 and t.in_flight == 0 for t in report.totals)


def test_random_cross_shard_traffic_matches_the_model(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Any mix of transfers, closes and relay passes keeps every wallet equal to the model,
    and once settled the cluster audits clean with clearing accounts at zero."""
    server = request.getfixturevalue("postgres_server") if backend == "postgres" else None

    # Each example gets fresh shard databases, so the @given test lives in here and
    # not on the fixtures (which pytest sets up once for all examples).
    @settings(max_examples=EXAMPLES[backend])
    @given(ops)
    def check(steps: list[tuple[str, int, int, int]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            databases = ClusterDatabases(backend, Path(tmp) / "cluster", server)
            try:
                asyncio.run(_scenario(databases, steps))
            finally:
                databases.drop()

    check()
