-- Schema v22: the slot map, versioned and kept in the shards, and the moves of slot
-- ranges; the same as the SQLite dialect.
CREATE TABLE slot_maps (
    version    bigint PRIMARY KEY,
    shard_map  text   NOT NULL,
    created_at bigint NOT NULL
);

-- The cluster's map, kept on the key shard apart from its own fence: a move switches the
-- cluster (this table) only once the target owns the slots, whichever shard keeps it.
CREATE TABLE slot_catalog (
    version    bigint PRIMARY KEY,
    shard_map  text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE slot_moves (
    id         text COLLATE "C" PRIMARY KEY,
    first_slot integer NOT NULL,
    last_slot  integer NOT NULL,
    source     text COLLATE "C" NOT NULL,
    target     text COLLATE "C" NOT NULL,
    state      text   NOT NULL,
    detail     text   NOT NULL DEFAULT '',
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE moved_transfers (
    id                text COLLATE "C" NOT NULL,
    debit_account_id  text COLLATE "C" NOT NULL,
    credit_account_id text COLLATE "C" NOT NULL,
    amount            bigint  NOT NULL,
    currency          text    NOT NULL,
    code              integer NOT NULL,
    flags             integer NOT NULL,
    pending_id        text COLLATE "C",
    timeout_seconds   integer NOT NULL,
    timestamp         bigint  NOT NULL,
    metadata          text,
    status            text,
    resolved_by       text COLLATE "C",
    source            text COLLATE "C" NOT NULL,
    chain_seq         bigint,
    chain_hash        bytea,
    PRIMARY KEY (source, id)  -- a cross-shard transfer's legs share its id
);
CREATE INDEX moved_transfers_by_debit  ON moved_transfers (debit_account_id, timestamp);
CREATE INDEX moved_transfers_by_credit ON moved_transfers (credit_account_id, timestamp);

CREATE TABLE moved_accounts (
    id              text COLLATE "C" PRIMARY KEY,
    currency        text    NOT NULL,
    code            integer NOT NULL,
    flags           integer NOT NULL,
    credit_limit    bigint,
    timestamp       bigint  NOT NULL,
    debits_pending  bigint  NOT NULL,
    debits_posted   bigint  NOT NULL,
    credits_pending bigint  NOT NULL,
    credits_posted  bigint  NOT NULL,
    tenant          text COLLATE "C" NOT NULL,
    target          text COLLATE "C" NOT NULL,
    move_id         text COLLATE "C" NOT NULL,
    moved_at        bigint  NOT NULL
);

-- Accounts that moved in: where from, and the newest time of what came with them (their
-- history and balance rows): the audit checks this shard's own balance rows after it.
CREATE TABLE moved_in (
    account_id text COLLATE "C" PRIMARY KEY,
    source     text COLLATE "C" NOT NULL,
    until      bigint NOT NULL
);
