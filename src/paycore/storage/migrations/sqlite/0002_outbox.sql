-- Schema v2: the outbox of cross-shard transfers (see paycore.cluster.settlement).
-- A row is written on the source shard in the same transaction as the saga's hold
-- (step 1); a relay leases it (claimed_by / claimed_until, ns), credits the target
-- shard (step 2), then posts or voids the hold and sets the final state (step 3).

CREATE TABLE outbox (
    transfer_id       TEXT PRIMARY KEY,
    target_shard      TEXT    NOT NULL,
    debit_account_id  TEXT    NOT NULL,
    credit_account_id TEXT    NOT NULL,
    amount            INTEGER NOT NULL CHECK (amount > 0),
    currency          TEXT    NOT NULL,
    code              INTEGER NOT NULL,
    metadata          TEXT,
    state             TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    claimed_by        TEXT,
    claimed_until     INTEGER NOT NULL DEFAULT 0,
    attempts          INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX outbox_open ON outbox (state, created_at);
