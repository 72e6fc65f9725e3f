-- Schema v6: payments (see paycore.storage.payments and paycore.payments).
-- A payment, its processor attempts and refunds live on the shard of the account it
-- credits (a payout on the wallet's shard), with every ledger transfer they make, so
-- that each step is one local transaction: a state change and its money move together.
-- States are text; paycore.payments.intents holds their transition tables.

CREATE TABLE payments (
    id                      TEXT PRIMARY KEY,
    merchant_account_id     TEXT    NOT NULL,
    amount                  INTEGER NOT NULL CHECK (amount > 0),
    currency                TEXT    NOT NULL,
    capture_method          TEXT    NOT NULL,
    status                  TEXT    NOT NULL,
    source_type             TEXT    NOT NULL,
    source_account_id       TEXT,
    card_brand              TEXT,
    card_last4              TEXT,
    card_token              TEXT,
    card_exp_month          INTEGER,
    card_exp_year           INTEGER,
    processor               TEXT,
    processor_reference     TEXT,
    authorization_reference TEXT,
    amount_authorized       INTEGER NOT NULL DEFAULT 0,
    amount_captured         INTEGER NOT NULL DEFAULT 0,
    amount_refunded         INTEGER NOT NULL DEFAULT 0,
    amount_refund_pending   INTEGER NOT NULL DEFAULT 0,
    hold_id                 TEXT,
    authorized_until        INTEGER,
    pending_op              TEXT,
    pending_reference       TEXT,
    pending_amount          INTEGER NOT NULL DEFAULT 0,
    pending_final           INTEGER NOT NULL DEFAULT 0,
    attempt_count           INTEGER NOT NULL DEFAULT 0,
    failure_code            TEXT,
    failure_detail          TEXT,
    cancel_reason           TEXT,
    idempotency_key         TEXT,
    version                 INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    -- Belt and braces: the writer checks these before it writes.
    CHECK (amount_captured <= amount_authorized),
    CHECK (amount_refunded >= 0 AND amount_refund_pending >= 0),
    CHECK (amount_refunded + amount_refund_pending <= amount_captured)
) WITHOUT ROWID;
-- The Idempotency-Key a payment was made under (its record, in `idempotency`, is what
-- makes a retry replay): not unique here, since a key may be used again once its record
-- is past its retention.
CREATE INDEX payments_by_key ON payments (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX payments_by_status ON payments (status, updated_at);
CREATE INDEX payments_by_authorization ON payments (status, authorized_until);

-- Every processor call of a payment, refund or payout (parent_id), in order.
CREATE TABLE payment_attempts (
    parent_id           TEXT    NOT NULL,
    seq                 INTEGER NOT NULL,
    operation           TEXT    NOT NULL,
    processor           TEXT    NOT NULL,
    reference           TEXT    NOT NULL UNIQUE,
    amount              INTEGER NOT NULL,
    outcome             TEXT,
    decline_code        TEXT,
    error               TEXT,
    processor_reference TEXT,
    latency_ms          REAL,
    routing             TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (parent_id, seq)
) WITHOUT ROWID;

CREATE TABLE refunds (
    id                  TEXT PRIMARY KEY,
    payment_id          TEXT    NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount > 0),
    currency            TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    processor           TEXT,
    hold_id             TEXT,
    processor_reference TEXT,
    attempt_count       INTEGER NOT NULL DEFAULT 0,
    failure_code        TEXT,
    decline_code        TEXT,
    idempotency_key     TEXT,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at);
CREATE INDEX refunds_by_status ON refunds (status, updated_at);

CREATE TABLE payouts (
    id                  TEXT PRIMARY KEY,
    wallet_account_id   TEXT    NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount > 0),
    currency            TEXT    NOT NULL,
    destination         TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    processor           TEXT,
    hold_id             TEXT,
    processor_reference TEXT,
    attempt_count       INTEGER NOT NULL DEFAULT 0,
    failure_code        TEXT,
    decline_code        TEXT,
    failure_detail      TEXT,
    idempotency_key     TEXT,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX payouts_by_status ON payouts (status, updated_at);

-- Events for webhooks, written in the transaction of the change they report. The
-- timestamp (the shard's sequence) orders them; delivery fields belong to the sender.
CREATE TABLE payment_events (
    id            TEXT PRIMARY KEY,
    type          TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    timestamp     INTEGER NOT NULL UNIQUE,
    delivered_at  INTEGER,
    claimed_by    TEXT,
    claimed_until INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX payment_events_undelivered ON payment_events (timestamp)
    WHERE delivered_at IS NULL;
CREATE INDEX payment_events_by_object ON payment_events (object_id, timestamp);
