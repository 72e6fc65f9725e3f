-- Ledger schema v1 for a PostgreSQL shard; the same tables as the SQLite store.
-- Hot, narrow rows (account counters, transfers) are kept apart from bulky, rarely
-- read ones (metadata, idempotency answers): a counter update then rewrites a small
-- tuple (HOT updates, fillfactor below 100) and a page holds many accounts.

CREATE TABLE accounts (
    id              text PRIMARY KEY,
    currency        text    NOT NULL,
    code            integer NOT NULL,
    flags           integer NOT NULL,          -- 1 no_overdraft, 2 history, 4 closed
    credit_limit    bigint,
    timestamp       bigint  NOT NULL,
    debits_pending  bigint  NOT NULL DEFAULT 0,
    debits_posted   bigint  NOT NULL DEFAULT 0,
    credits_pending bigint  NOT NULL DEFAULT 0,
    credits_posted  bigint  NOT NULL DEFAULT 0
) WITH (fillfactor = 80);

CREATE TABLE account_metadata (
    id       text PRIMARY KEY,
    metadata text NOT NULL
);

-- Append-only: a row is never updated or deleted. The timestamp is unique and
-- strictly increasing per shard.
CREATE TABLE transfers (
    timestamp         bigint PRIMARY KEY,
    id                text    NOT NULL UNIQUE,
    debit_account_id  text    NOT NULL,
    credit_account_id text    NOT NULL,
    amount            bigint  NOT NULL CHECK (amount > 0),
    currency          text    NOT NULL,
    code              integer NOT NULL,
    flags             integer NOT NULL,        -- 1 pending, 2 post, 4 void, 8 linked, 16 balancing
    pending_id        text,
    timeout_seconds   integer NOT NULL
);
CREATE INDEX transfers_by_debit  ON transfers (debit_account_id, timestamp);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id, timestamp);

CREATE TABLE transfer_metadata (
    id       text PRIMARY KEY,
    metadata text NOT NULL
);

-- The one mutable fact about a hold: its status (see PendingStatus).
CREATE TABLE pending_transfers (
    id          text PRIMARY KEY,
    status      text NOT NULL,
    expires_at  bigint,
    resolved_by text
);
CREATE INDEX pending_by_expiry ON pending_transfers (expires_at)
    WHERE status = 'pending' AND expires_at IS NOT NULL;

-- Balance snapshots of accounts flagged `history`, one per transfer touching them.
CREATE TABLE account_balances (
    account_id      text   NOT NULL,
    timestamp       bigint NOT NULL,
    debits_pending  bigint NOT NULL,
    debits_posted   bigint NOT NULL,
    credits_pending bigint NOT NULL,
    credits_posted  bigint NOT NULL,
    PRIMARY KEY (account_id, timestamp)
);

-- Stored answers of requests made with an Idempotency-Key, errors included.
CREATE TABLE idempotency (
    key          text PRIMARY KEY,
    fingerprint  text    NOT NULL,
    status       integer NOT NULL,
    body         bytea   NOT NULL,
    content_type text    NOT NULL,
    created_at   bigint  NOT NULL,
    expires_at   bigint  NOT NULL
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- Small per-shard facts. The last_timestamp row is also the shard's write lock: a
-- writer holds it FOR UPDATE for its whole transaction, which gives every shard one
-- total order of transfers even with several API nodes writing.
CREATE TABLE shard_meta (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO shard_meta (key, value) VALUES ('last_timestamp', 0);
