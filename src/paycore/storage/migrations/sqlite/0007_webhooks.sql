-- Schema v7: webhooks (see paycore.workers.webhooks and paycore.api.routes.processor_events).

-- An event the sender gave up on, after the retry schedule (about a day), is never
-- claimed again; the index of the events to send leaves it out.
ALTER TABLE payment_events ADD COLUMN failed_at INTEGER;
DROP INDEX payment_events_undelivered;
CREATE INDEX payment_events_undelivered ON payment_events (timestamp)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- What each endpoint (its URL) made of each event: a retry goes only to the endpoints
-- that have not answered 2xx yet. Written by the sender's acks; status pending |
-- delivered | failed, outcome the last attempt's (delivered | retry | rejected).
CREATE TABLE webhook_deliveries (
    event_id    TEXT    NOT NULL,
    endpoint    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    outcome     TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (event_id, endpoint)
) WITHOUT ROWID;

-- Notifications posted by processors, kept once per (processor, event id): a duplicate
-- delivery is answered 200 and changes nothing. The body is the JSON as received.
CREATE TABLE processor_events (
    processor   TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    reference   TEXT,
    body        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (processor, id)
) WITHOUT ROWID;
CREATE INDEX processor_events_by_reference ON processor_events (reference)
    WHERE reference IS NOT NULL;
