"""The history chain: every shard's transfers are hash-chained, and the audit proves it.

Each damage done to the rows behind the store's back (an edited amount, account or
metadata, a deleted, inserted or reordered row, an edited head) is named by the audit;
a chain forged consistently from scratch passes the link checks but not a checkpoint.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import AnyStore, LedgerDatabase
from ops.conftest import Clock
from ops.support import post, transfer, void
from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.ops.audit import (
    AuditReport,
    ViolationKind,
    audit_store,
    load_checkpoint,
    save_checkpoint,
    verified_heads,
)
from paycore.storage import sqlite as sqlite_module
from paycore.storage.base import CreateAccounts, CreateTransfers, ExpirePending
from paycore.storage.chain import (
    ChainHead,
    ChainLinker,
    chain_link,
    genesis_hash,
    record_bytes,
)
from paycore.storage.codec import TRANSFER_COLUMNS, transfer_from_row
from paycore.storage.sqlite import SQLiteStore

K = ViolationKind
CHAIN_KINDS = {K.HISTORY_CHAIN_BROKEN, K.HISTORY_CHAIN_HEAD_MISMATCH, K.HISTORY_CHECKPOINT_MISMATCH}
# In the order the store writes them, which is their chain order (seq 1..7).
IDS = ["f1", "f2", "t1", "m1", "h1", "h2", "p2"]


async def _populate(store: AnyStore, clock: Clock) -> None:
    await store.execute(
        CreateAccounts(
            (
                AccountRequest("bank", "USD"),
                AccountRequest("w1", "USD", flags=AccountFlags(no_overdraft=True, history=True)),
                AccountRequest("w2", "USD", flags=AccountFlags(no_overdraft=True)),
            )
        )
    )
    results = await store.execute(
        CreateTransfers(
            (
                transfer("f1", "bank", "w1", 5_000),
                transfer("f2", "bank", "w2", 5_000),
                transfer("t1", "w1", "w2", 700),
                transfer("m1", "w2", "w1", 5, metadata={"order": "A-1", "tags": ["x", "é"]}),
                transfer("h1", "w2", "w1", 900, pending=True, timeout_seconds=2),
                transfer("h2", "w1", "w2", 400, pending=True, timeout_seconds=3600),
                post("p2", "h2", 150),
            )
        )
    )
    assert all(r.ok for r in results), results
    clock.advance(5)
    assert await store.execute(ExpirePending()) == ["h1"]


def _chain_violations(report: AuditReport) -> list[tuple[ViolationKind, str | None, int | None]]:
    return [(v.kind, v.transfer_id, v.seq) for v in report.violations if v.kind in CHAIN_KINDS]


async def test_a_store_chains_its_history_and_the_audit_verifies_it(
    store: AnyStore, database: LedgerDatabase, clock: Clock
) -> None:
    """Transfers (posts included) get seq 1..n in write order, and the audit verifies the
    chain to the head kept in shard_meta."""
    await _populate(store, clock)
    rows = database.query("SELECT id, chain_seq FROM transfers ORDER BY timestamp")
    assert rows == [(tid, seq) for seq, tid in enumerate(IDS, 1)]
    report = await audit_store(store)
    assert report.ok, report.violations
    assert report.chain is not None
    assert (report.chain.shard, report.chain.records, report.chain.ok) == ("shard-0", 7, True)
    (head,) = database.query("SELECT value, digest FROM shard_meta WHERE key = 'chain_head'")
    assert report.chain.head == ChainHead(7, bytes(head[1]).hex())
    assert head[0] == 7


async def test_an_empty_shard_has_the_genesis_head(store: AnyStore) -> None:
    """With no transfer, the chain is its genesis, derived from the shard's name."""
    report = await audit_store(store)
    assert report.ok
    assert report.chain is not None
    assert report.chain.head == ChainHead(0, genesis_hash("shard-0").hex())


@pytest.mark.parametrize(
    ("sql", "kind", "transfer_id", "seq"),
    [
        pytest.param(
            "UPDATE transfers SET amount = amount + 1 WHERE id = 't1'",
            K.HISTORY_CHAIN_BROKEN,
            "t1",
            3,
            id="amount-edited",
        ),
        pytest.param(
            "UPDATE transfers SET credit_account_id = 'bank' WHERE id = 't1'",
            K.HISTORY_CHAIN_BROKEN,
            "t1",
            3,
            id="account-edited",
        ),
        pytest.param(
            'UPDATE transfer_metadata SET metadata = \'{"order":"B-2","tags":["x","é"]}\' '
            "WHERE id = 'm1'",
            K.HISTORY_CHAIN_BROKEN,
            "m1",
            4,
            id="metadata-edited",
        ),
        pytest.param(
            "DELETE FROM transfer_metadata WHERE id = 'm1'",
            K.HISTORY_CHAIN_BROKEN,
            "m1",
            4,
            id="metadata-deleted",
        ),
        pytest.param(
            "UPDATE transfers SET timestamp = timestamp + 1 WHERE id = 'p2'",
            K.HISTORY_CHAIN_BROKEN,
            "p2",
            7,
            id="timestamp-edited",
        ),
        pytest.param(
            "DELETE FROM transfers WHERE id = 't1'",
            K.HISTORY_CHAIN_BROKEN,
            "m1",  # the record after the gap no longer links
            4,
            id="row-deleted",
        ),
        pytest.param(
            "UPDATE transfers SET chain_seq = CASE id WHEN 'f2' THEN 3 ELSE 2 END "
            "WHERE id IN ('f2', 't1')",
            K.HISTORY_CHAIN_BROKEN,
            "f2",
            3,
            id="seqs-swapped",
        ),
        pytest.param(
            "DELETE FROM transfers WHERE id = 'p2'",
            K.HISTORY_CHAIN_HEAD_MISMATCH,
            None,
            7,
            id="last-row-deleted",
        ),
        pytest.param(
            "UPDATE shard_meta SET value = 6 WHERE key = 'chain_head'",
            K.HISTORY_CHAIN_HEAD_MISMATCH,
            None,
            6,
            id="head-seq-edited",
        ),
        pytest.param(
            "UPDATE shard_meta SET digest = NULL WHERE key = 'chain_head'",
            K.HISTORY_CHAIN_HEAD_MISMATCH,
            None,
            7,
            id="head-hash-edited",
        ),
    ],
)
async def test_history_edited_in_the_database_is_detected(
    store: AnyStore,
    database: LedgerDatabase,
    clock: Clock,
    *,
    sql: str,
    kind: ViolationKind,
    transfer_id: str | None,
    seq: int,
) -> None:
    """An edit of the ledger's history behind the store's back breaks the chain, and the
    audit names the first record (or the head) that no longer verifies."""
    await _populate(store, clock)
    database.query(sql)
    report = await audit_store(store)
    assert not report.ok
    assert report.chain is not None
    assert not report.chain.ok
    found = _chain_violations(report)
    assert found[0] == (kind, transfer_id, seq), report.violations
    first = next(v for v in report.violations if v.kind is kind)
    assert first.shard == "shard-0"


async def test_a_forged_row_is_detected(
    store: AnyStore, database: LedgerDatabase, clock: Clock
) -> None:
    """A transfer inserted in SQL has no place in the chain (or a made-up one): named."""
    await _populate(store, clock)
    ((first, last),) = database.query("SELECT min(timestamp), max(timestamp) FROM transfers")
    database.query(
        f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        *("forged", "bank", "w1", 1_000_000, "USD", 0, 0, None, 0, first - 100),
    )
    database.query(
        f"INSERT INTO transfers ({TRANSFER_COLUMNS}, chain_seq, chain_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        *("forged-2", "bank", "w1", 7, "USD", 0, 0, None, 0, last + 10, 8, b"\x00" * 32),
    )
    report = await audit_store(store)
    found = _chain_violations(report)
    assert (K.HISTORY_CHAIN_BROKEN, "forged", None) in found
    assert (K.HISTORY_CHAIN_BROKEN, "forged-2", 8) in found
    assert (K.HISTORY_CHAIN_HEAD_MISMATCH, None, 7) in found


def _rechain(database: LedgerDatabase, shard: str = "shard-0") -> None:
    """What an attacker with write access to the database can do: recompute every hash
    and the head from scratch over the (edited) rows, consistently."""
    rows = database.query(
        f"SELECT {', '.join(f't.{c.strip()}' for c in TRANSFER_COLUMNS.split(','))}, m.metadata "
        "FROM transfers t LEFT JOIN transfer_metadata m ON m.id = t.id ORDER BY t.timestamp"
    )
    linker = ChainLinker(shard, 0, None)
    for row in rows:
        t = transfer_from_row(row, row[10])
        ((seq, digest),) = linker.extend([t])
        database.query(
            "UPDATE transfers SET chain_seq = ?, chain_hash = ? WHERE id = ?", seq, digest, t.id
        )
    database.query(
        "UPDATE shard_meta SET value = ?, digest = ? WHERE key = 'chain_head'",
        linker.seq,
        linker.hash,
    )


async def test_a_chain_forged_from_scratch_is_caught_by_a_checkpoint(
    store: AnyStore, database: LedgerDatabase, clock: Clock, tmp_path: Path
) -> None:
    """Rewriting history and recomputing every hash fools the link checks, not a head
    recorded earlier outside the database."""
    await _populate(store, clock)
    first = await audit_store(store)
    path = tmp_path / "checkpoint.json"
    save_checkpoint(path, verified_heads({"shard-0": first}))
    checkpoint = load_checkpoint(path)["shard-0"]
    assert checkpoint.seq == 7

    database.query("UPDATE transfers SET amount = 1 WHERE id = 'f2'")
    _rechain(database)
    unanchored = await audit_store(store)
    assert unanchored.chain is not None
    assert unanchored.chain.ok  # consistent: only the checkpoint can tell
    report = await audit_store(store, checkpoint=checkpoint)
    assert report.chain is not None
    assert not report.chain.ok
    assert _chain_violations(report) == [(K.HISTORY_CHECKPOINT_MISMATCH, "p2", 7)]


async def test_a_truncated_chain_is_caught_by_a_checkpoint(
    store: AnyStore, database: LedgerDatabase, clock: Clock
) -> None:
    """Cutting the last records and fixing the head leaves the chain short of the checkpoint."""
    await _populate(store, clock)
    report = await audit_store(store)
    assert report.chain is not None
    checkpoint = report.chain.head
    database.query("DELETE FROM transfers WHERE id IN ('h2', 'p2')")
    _rechain(database)
    report = await audit_store(store, checkpoint=checkpoint)
    assert (K.HISTORY_CHECKPOINT_MISMATCH, None, 7) in _chain_violations(report)


async def test_the_chain_extends_its_checkpoint(store: AnyStore, clock: Clock) -> None:
    """Writing on after a checkpoint keeps the chain passing through it."""
    await _populate(store, clock)
    report = await audit_store(store)
    assert report.chain is not None
    checkpoint = report.chain.head
    await store.execute(CreateTransfers((transfer("t9", "w2", "w1", 3),)))
    report = await audit_store(store, checkpoint=checkpoint)
    assert report.ok, report.violations
    assert report.chain is not None
    assert (report.chain.head.seq, report.chain.checkpoint) == (8, checkpoint)


async def test_rows_written_before_the_chain_are_chained_once_at_first_open(
    database: LedgerDatabase, clock: Clock
) -> None:
    """A shard whose rows predate migration 0009 (no seq, a backfill marker) gets them
    chained in timestamp order when a store opens it; a row added later without a place
    in the chain is not chained after the fact."""
    store = database.store(clock=clock)
    await store.start()
    await _populate(store, clock)
    await store.stop()
    hashes = database.query("SELECT chain_hash FROM transfers ORDER BY timestamp")
    # The state migration 0009 leaves on a shard with data (see its SQL).
    database.query("UPDATE transfers SET chain_seq = NULL, chain_hash = NULL")
    database.query("UPDATE shard_meta SET value = 0, digest = NULL WHERE key = 'chain_head'")
    database.query(
        "INSERT INTO shard_meta (key, value) SELECT 'chain_backfill_until', value "
        "FROM shard_meta WHERE key = 'last_timestamp'"
    )
    store = database.store(clock=clock)
    await store.start()
    try:
        assert database.query("SELECT chain_hash FROM transfers ORDER BY timestamp") == hashes
        assert database.query("SELECT 1 FROM shard_meta WHERE key = 'chain_backfill_until'") == []
        assert (await audit_store(store)).ok
        database.query("UPDATE transfers SET chain_seq = NULL, chain_hash = NULL WHERE id = 'p2'")
    finally:
        await store.stop()
    store = database.store(clock=clock)
    await store.start()  # no marker any more: nothing is chained
    try:
        report = await audit_store(store)
        assert (K.HISTORY_CHAIN_BROKEN, "p2", None) in _chain_violations(report)
    finally:
        await store.stop()


async def test_a_sqlite_shard_migrated_with_data_is_chained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file written by the schema before 0009, then opened by this version, is migrated
    and its history chained, and audits clean."""
    path = tmp_path / "old.sqlite3"
    clock = Clock()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with monkeypatch.context() as patch:
            old = [m for m in sqlite_module._migrations() if m[0] < 9]
            patch.setattr(sqlite_module, "_migrations", lambda: old)
            sqlite_module.migrate(conn)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(transfers)")}
        assert "chain_seq" not in columns
        conn.execute(
            "INSERT INTO accounts VALUES ('a', 'USD', 0, 0, NULL, 1, 0, 30, 0, 0), "
            "('b', 'USD', 0, 0, NULL, 2, 0, 0, 0, 30)"
        )
        conn.execute(
            f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES "
            "('x1', 'a', 'b', 10, 'USD', 0, 0, NULL, 0, 10), "
            "('x2', 'a', 'b', 20, 'USD', 0, 0, NULL, 0, 11)"
        )
        conn.execute("INSERT INTO transfer_metadata VALUES ('x2', '{\"k\":1}')")
        conn.execute("UPDATE shard_meta SET value = 11 WHERE key = 'last_timestamp'")
    finally:
        conn.close()
    store = SQLiteStore(path, clock=clock)
    await store.start()
    try:
        await store.execute(CreateTransfers((transfer("x3", "a", "b", 1),)))
        report = await audit_store(store)
        assert report.ok, report.violations
        assert report.chain is not None
        assert (report.chain.records, report.chain.head.seq) == (3, 3)
    finally:
        await store.stop()


# -- the encoding ---------------------------------------------------------------------------


def test_the_record_encoding_is_canonical_and_versioned() -> None:
    """The encoding starts with its version and seq, and metadata keys are sorted at every
    depth, so the same transfer hashes the same whatever order its metadata came in."""
    t1 = transfer_from_row(
        ("a", "b", "c", 5, "USD", 0, 1, None, 30, 99), '{"z":1,"a":{"y":2,"b":3}}'
    )
    t2 = transfer_from_row(
        ("a", "b", "c", 5, "USD", 0, 1, None, 30, 99), '{"a":{"b":3,"y":2},"z":1}'
    )
    assert record_bytes(4, t1) == record_bytes(4, t2)
    assert record_bytes(4, t1) == (
        b'[1,4,"a","b","c",5,"USD",0,1,null,30,99,{"a":{"b":3,"y":2},"z":1}]'
    )
    assert chain_link(b"p" * 32, 4, t1) != chain_link(b"q" * 32, 4, t1)
    assert genesis_hash("shard-0") != genesis_hash("shard-1")


# -- random batches ---------------------------------------------------------------------------

_ACCOUNTS = ["bank", "w1", "w2", "w3"]

_metadata = st.none() | st.dictionaries(
    st.text(max_size=4), st.integers() | st.text(max_size=6) | st.booleans(), max_size=3
)


@st.composite
def _batches(draw: st.DrawFn) -> list[list[TransferRequest]]:
    batches = []
    n = 0
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(1, 6))):
            n += 1
            kind = draw(st.sampled_from(["plain", "plain", "hold", "post", "void"]))
            linked = draw(st.integers(0, 5)) == 0
            if kind in ("post", "void") and n > 1:
                hold = f"r{draw(st.integers(1, n - 1))}"
                item = post(f"r{n}", hold) if kind == "post" else void(f"r{n}", hold)
            else:
                debit, credit = draw(st.permutations(_ACCOUNTS))[:2]
                item = transfer(
                    f"r{n}",
                    debit,
                    credit,
                    draw(st.integers(1, 500)),
                    pending=kind == "hold",
                    timeout_seconds=draw(st.sampled_from([0, 1, 60])) if kind == "hold" else 0,
                    metadata=draw(_metadata),
                )
            if linked:
                item = TransferRequest(**{**_fields(item), "flags": _linked(item.flags)})
            batch.append(item)
        batches.append(batch)
    return batches


def _fields(item: TransferRequest) -> dict[str, Any]:
    return {f: getattr(item, f) for f in item.__struct_fields__}


def _linked(flags: TransferFlags) -> TransferFlags:
    return TransferFlags(
        **{**{f: getattr(flags, f) for f in flags.__struct_fields__}, "linked": True}
    )


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches())
def test_random_batches_keep_the_chain_valid(
    new_database: Callable[[], LedgerDatabase], batches: list[list[TransferRequest]]
) -> None:
    """Whatever batches a shard applies (holds, posts, voids, expiries, linked chains that
    fail, metadata), its chain covers every stored transfer and verifies."""
    database = new_database()
    clock = Clock()

    async def run() -> None:
        store = database.store(clock=clock)
        await store.start()
        try:
            await store.execute(
                CreateAccounts(
                    tuple(
                        AccountRequest(a, "USD", flags=AccountFlags(history=True))
                        for a in _ACCOUNTS
                    )
                )
            )
            for batch in batches:
                await store.execute(CreateTransfers(tuple(batch)))
                clock.advance(1)
                await store.execute(ExpirePending())
            report = await audit_store(store)
            assert report.chain is not None
            assert report.chain.ok, report.violations
            (count,) = database.query("SELECT count(*) FROM transfers")
            assert report.chain.records == report.chain.head.seq == count[0]
        finally:
            await store.stop()

    try:
        asyncio.run(run())
    finally:
        database.drop()
