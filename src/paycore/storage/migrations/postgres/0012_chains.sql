-- Schema v12: linked chains across shards (see paycore.cluster.chains). A chain whose
-- transfers touch several shards is prepared on every shard but one (its legs checked
-- there and kept, the money they need reserved, the holds they resolve locked), decided
-- on the last (its coordinator, which applies its own legs in the deciding transaction),
-- then applied or dropped on the others.

CREATE TABLE chains (
    chain_id     text COLLATE "C" PRIMARY KEY,
    state        text   NOT NULL,   -- prepared | committed | aborted
    coordinator  text   NOT NULL,   -- the shard holding the decision
    participants text   NOT NULL,   -- JSON list of the other shards
    legs         bytea  NOT NULL,   -- this shard's legs and outbox rows (JSON)
    results      bytea,             -- the legs' results once applied (JSON)
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL
);
CREATE INDEX chains_state ON chains (state, created_at);

-- Money a prepared chain needs from an account (its deepest drawdown); other transfers
-- see it as unavailable, as they would see a hold. Accounts the chain only credits are
-- listed with 0, so that they cannot be closed under it.
CREATE TABLE chain_reservations (
    chain_id   text COLLATE "C" NOT NULL,
    account_id text COLLATE "C" NOT NULL,
    amount     bigint NOT NULL,
    PRIMARY KEY (chain_id, account_id)
);
CREATE INDEX chain_reservations_account ON chain_reservations (account_id);

-- Holds a prepared chain posts or voids: nobody else may resolve them meanwhile.
CREATE TABLE chain_locks (
    pending_id text COLLATE "C" PRIMARY KEY,
    chain_id   text COLLATE "C" NOT NULL
);
