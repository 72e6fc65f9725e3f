-- Schema v2: the outbox of cross-shard transfers (see paycore.cluster.settlement).
-- A row is written on the source shard in the same transaction as the saga's hold
-- (step 1); a relay leases it (claimed_by / claimed_until, ns), credits the target
-- shard (step 2), then posts or voids the hold and sets the final state (step 3).

CREATE TABLE outbox (
    transfer_id       text PRIMARY KEY,
    target_shard      text    NOT NULL,
    debit_account_id  text    NOT NULL,
    credit_account_id text    NOT NULL,
    amount            bigint  NOT NULL CHECK (amount > 0),
    currency          text    NOT NULL,
    code              integer NOT NULL,
    metadata          text,
    state             text    NOT NULL,
    created_at        bigint  NOT NULL,
    updated_at        bigint  NOT NULL,
    claimed_by        text,
    claimed_until     bigint  NOT NULL DEFAULT 0,
    attempts          integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_open ON outbox (state, created_at);
