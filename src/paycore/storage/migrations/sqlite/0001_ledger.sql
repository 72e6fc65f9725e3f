-- Ledger schema v1 for the embedded SQLite store.
-- Hot, narrow rows (account counters, transfers) are kept apart from bulky, rarely
-- read ones (metadata, idempotency answers) so that updating a counter rewrites a
-- small row and a page holds many accounts.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    currency        TEXT    NOT NULL,
    code            INTEGER NOT NULL,
    flags           INTEGER NOT NULL,          -- 1 no_overdraft, 2 history, 4 closed
    credit_limit    INTEGER,
    timestamp       INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL DEFAULT 0,
    debits_posted   INTEGER NOT NULL DEFAULT 0,
    credits_pending INTEGER NOT NULL DEFAULT 0,
    credits_posted  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE account_metadata (
    id       TEXT PRIMARY KEY,
    metadata TEXT NOT NULL
) WITHOUT ROWID;

-- Append-only: a row is never updated or deleted. The timestamp is unique and
-- strictly increasing per shard and doubles as the rowid (cheap appends).
CREATE TABLE transfers (
    timestamp         INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    debit_account_id  TEXT    NOT NULL,
    credit_account_id TEXT    NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount > 0),
    currency          TEXT    NOT NULL,
    code              INTEGER NOT NULL,
    flags             INTEGER NOT NULL,        -- 1 pending, 2 post, 4 void, 8 linked, 16 balancing
    pending_id        TEXT,
    timeout_seconds   INTEGER NOT NULL
);
CREATE INDEX transfers_by_debit  ON transfers (debit_account_id, timestamp);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id, timestamp);

CREATE TABLE transfer_metadata (
    id       TEXT PRIMARY KEY,
    metadata TEXT NOT NULL
) WITHOUT ROWID;

-- The one mutable fact about a hold: its status (see PendingStatus).
CREATE TABLE pending_transfers (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    expires_at  INTEGER,
    resolved_by TEXT
) WITHOUT ROWID;
CREATE INDEX pending_by_expiry ON pending_transfers (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;

-- Balance snapshots of accounts flagged `history`, one per transfer touching them.
CREATE TABLE account_balances (
    account_id      TEXT    NOT NULL,
    timestamp       INTEGER NOT NULL,
    debits_pending  INTEGER NOT NULL,
    debits_posted   INTEGER NOT NULL,
    credits_pending INTEGER NOT NULL,
    credits_posted  INTEGER NOT NULL,
    PRIMARY KEY (account_id, timestamp)
) WITHOUT ROWID;

-- Stored answers of requests made with an Idempotency-Key, errors included.
CREATE TABLE idempotency (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB    NOT NULL,
    content_type TEXT   NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- Small per-shard facts, e.g. the last timestamp handed out.
CREATE TABLE shard_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO shard_meta (key, value) VALUES ('last_timestamp', 0);
