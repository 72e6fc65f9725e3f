-- Schema v16: a cross-shard saga recorded in balance history as one shard's transfer
-- (paycore.ledger.saga_history). The holds of posted transfers in flight on `history`
-- accounts, shown as posted in every balance row of the account until they land.

CREATE TABLE saga_holds_in_flight (
    hold_id    TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    amount     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX saga_holds_in_flight_account ON saga_holds_in_flight (account_id);

-- Rows written before this version keep the old form (the hold pending, its post a row
-- of its own); the auditor replays transfers up to this timestamp so.
INSERT INTO shard_meta (key, value)
SELECT 'saga_history_since', COALESCE(MAX(timestamp), 0) FROM transfers;
