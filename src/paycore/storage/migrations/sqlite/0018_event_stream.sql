-- Schema v18: the event stream's publish cursors (see paycore.events.publisher and
-- docs/events.md). The events themselves are not copied: the transfers table (append-only,
-- chain_seq) and payment_events (written in the transaction of each change) are the
-- outbox. One row per log this shard publishes: 'ledger' (transfers, by chain_seq) and
-- 'payments' (payment_events, by timestamp); seq is the last position NATS acknowledged,
-- timestamp that row's timestamp (the primary key the next read starts after, so the
-- read needs no index on chain_seq). Moved forward only, by the elected publisher.
CREATE TABLE event_stream_cursors (
    log        TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    timestamp  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
