-- Schema v22: the slot map, versioned and kept in the shards (paycore.cluster.slot_catalog,
-- docs/resharding.md). Every shard keeps the versions it was told of; the key shard's
-- catalog (slot_catalog, below) is the cluster's map, which nodes read at start and every
-- second after. A shard's own newest version is its fence: in a write's own transaction it
-- refuses an account that version places on another shard (paycore.storage.slot_fence),
-- so a node routing by an older map can never write to a slot's old owner.
-- ``shard_map``: JSON {"ranges": [[first, last, shard], ...], "prefixes": [[prefix, shard
-- or null], ...]}.
CREATE TABLE slot_maps (
    version    INTEGER PRIMARY KEY,
    shard_map  TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- The cluster's map, kept on the key shard apart from its own fence: a move switches the
-- cluster (this table) only once the target owns the slots, whichever shard keeps it.
CREATE TABLE slot_catalog (
    version    INTEGER PRIMARY KEY,
    shard_map  TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Moves of slot ranges between shards (kept on the key shard): each step is recorded
-- before it is taken, so that running the move again resumes it or rolls it back.
CREATE TABLE slot_moves (
    id         TEXT    PRIMARY KEY,
    first_slot INTEGER NOT NULL,
    last_slot  INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- History that moved in with an account (paycore.cluster.slot_moves): each transfer
-- touching a moved-in account, as its source shard stored it (metadata, a hold's final
-- status), with its place in the source's hash chain (``source``, ``chain_seq``,
-- ``chain_hash``), by which an auditor checks the copy against the source's chain.
-- Read beside ``transfers`` when an account's history is listed; never chained here.
CREATE TABLE moved_transfers (
    id                TEXT    NOT NULL,
    debit_account_id  TEXT    NOT NULL,
    credit_account_id TEXT    NOT NULL,
    amount            INTEGER NOT NULL,
    currency          TEXT    NOT NULL,
    code              INTEGER NOT NULL,
    flags             INTEGER NOT NULL,
    pending_id        TEXT,
    timeout_seconds   INTEGER NOT NULL,
    timestamp         INTEGER NOT NULL,
    metadata          TEXT,
    status            TEXT,
    resolved_by       TEXT,
    source            TEXT    NOT NULL,
    chain_seq         INTEGER,
    chain_hash        BLOB,
    PRIMARY KEY (source, id)  -- a cross-shard transfer's legs share its id
) WITHOUT ROWID;
CREATE INDEX moved_transfers_by_debit  ON moved_transfers (debit_account_id, timestamp);
CREATE INDEX moved_transfers_by_credit ON moved_transfers (credit_account_id, timestamp);

-- Accounts that moved out: their row as it was when it left (balances included), kept
-- by the source for its audit (its transfers still name them) and to say where they went.
CREATE TABLE moved_accounts (
    id              TEXT    PRIMARY KEY,
    currency        TEXT    NOT NULL,
    code            INTEGER NOT NULL,
    flags           INTEGER NOT NULL,
    credit_limit    INTEGER,
    timestamp       INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL,
    debits_posted   INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    credits_posted  INTEGER NOT NULL,
    tenant          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    move_id         TEXT    NOT NULL,
    moved_at        INTEGER NOT NULL
) WITHOUT ROWID;

-- Accounts that moved in: where from, and the newest time of what came with them (their
-- history and balance rows): the audit checks this shard's own balance rows after it.
CREATE TABLE moved_in (
    account_id TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    until      INTEGER NOT NULL
) WITHOUT ROWID;
