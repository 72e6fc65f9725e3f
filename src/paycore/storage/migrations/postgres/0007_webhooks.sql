-- Schema v7: webhooks (see paycore.workers.webhooks and paycore.api.routes.processor_events);
-- the same tables as the SQLite dialect, id columns compared byte-wise (COLLATE "C", see 0004).

-- An event the sender gave up on, after the retry schedule (about a day), is never
-- claimed again; the index of the events to send leaves it out.
ALTER TABLE payment_events ADD COLUMN failed_at bigint;
DROP INDEX payment_events_undelivered;
CREATE INDEX payment_events_undelivered ON payment_events (timestamp)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- What each endpoint (its URL) made of each event: a retry goes only to the endpoints
-- that have not answered 2xx yet. Written by the sender's acks; status pending |
-- delivered | failed, outcome the last attempt's (delivered | retry | rejected).
CREATE TABLE webhook_deliveries (
    event_id    text COLLATE "C" NOT NULL,
    endpoint    text COLLATE "C" NOT NULL,
    status      text    NOT NULL,
    outcome     text,
    attempts    bigint  NOT NULL DEFAULT 0,
    last_status bigint,
    last_error  text,
    created_at  bigint  NOT NULL,
    updated_at  bigint  NOT NULL,
    PRIMARY KEY (event_id, endpoint)
);

-- Notifications posted by processors, kept once per (processor, event id): a duplicate
-- delivery is answered 200 and changes nothing. The body is the JSON as received.
CREATE TABLE processor_events (
    processor   text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    type        text    NOT NULL,
    reference   text COLLATE "C",
    body        text    NOT NULL,
    received_at bigint  NOT NULL,
    PRIMARY KEY (processor, id)
);
CREATE INDEX processor_events_by_reference ON processor_events (reference)
    WHERE reference IS NOT NULL;
