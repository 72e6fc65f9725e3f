-- Schema v12: linked chains across shards (see paycore.cluster.chains). A chain whose
-- transfers touch several shards is prepared on every shard but one (its legs checked
-- there and kept, the money they need reserved, the holds they resolve locked), decided
-- on the last (its coordinator, which applies its own legs in the deciding transaction),
-- then applied or dropped on the others.

CREATE TABLE chains (
    chain_id     TEXT PRIMARY KEY,
    state        TEXT NOT NULL,     -- prepared | committed | aborted
    coordinator  TEXT NOT NULL,     -- the shard holding the decision
    participants TEXT NOT NULL,     -- JSON list of the other shards
    legs         BLOB NOT NULL,     -- this shard's legs and outbox rows (JSON)
    results      BLOB,              -- the legs' results once applied (JSON)
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX chains_state ON chains (state, created_at);

-- Money a prepared chain needs from an account (its deepest drawdown); other transfers
-- see it as unavailable, as they would see a hold. Accounts the chain only credits are
-- listed with 0, so that they cannot be closed under it.
CREATE TABLE chain_reservations (
    chain_id   TEXT NOT NULL,
    account_id TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    PRIMARY KEY (chain_id, account_id)
) WITHOUT ROWID;
CREATE INDEX chain_reservations_account ON chain_reservations (account_id);

-- Holds a prepared chain posts or voids: nobody else may resolve them meanwhile.
CREATE TABLE chain_locks (
    pending_id TEXT PRIMARY KEY,
    chain_id   TEXT NOT NULL
) WITHOUT ROWID;
