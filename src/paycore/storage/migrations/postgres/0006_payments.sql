-- Schema v6: payments (see paycore.storage.payments and paycore.payments); the same
-- tables as the SQLite dialect, id columns compared byte-wise (COLLATE "C", see 0004).
-- A payment, its processor attempts and refunds live on the shard of the account it
-- credits (a payout on the wallet's shard), with every ledger transfer they make, so
-- that each step is one local transaction: a state change and its money move together.
-- States are text; paycore.payments.intents holds their transition tables.

CREATE TABLE payments (
    id                      text COLLATE "C" PRIMARY KEY,
    merchant_account_id     text COLLATE "C" NOT NULL,
    amount                  bigint NOT NULL CHECK (amount > 0),
    currency                text    NOT NULL,
    capture_method          text    NOT NULL,
    status                  text    NOT NULL,
    source_type             text    NOT NULL,
    source_account_id       text COLLATE "C",
    card_brand              text,
    card_last4              text,
    card_token              text,
    card_exp_month          bigint,
    card_exp_year           bigint,
    processor               text,
    processor_reference     text,
    authorization_reference text,
    amount_authorized       bigint NOT NULL DEFAULT 0,
    amount_captured         bigint NOT NULL DEFAULT 0,
    amount_refunded         bigint NOT NULL DEFAULT 0,
    amount_refund_pending   bigint NOT NULL DEFAULT 0,
    hold_id                 text COLLATE "C",
    authorized_until        bigint,
    pending_op              text,
    pending_reference       text,
    pending_amount          bigint NOT NULL DEFAULT 0,
    pending_final           bigint NOT NULL DEFAULT 0,
    attempt_count           bigint NOT NULL DEFAULT 0,
    failure_code            text,
    failure_detail          text,
    cancel_reason           text,
    idempotency_key         text COLLATE "C",
    version                 bigint NOT NULL,
    created_at              bigint NOT NULL,
    updated_at              bigint NOT NULL,
    -- Belt and braces: the writer checks these before it writes.
    CHECK (amount_captured <= amount_authorized),
    CHECK (amount_refunded >= 0 AND amount_refund_pending >= 0),
    CHECK (amount_refunded + amount_refund_pending <= amount_captured)
);
-- The Idempotency-Key a payment was made under (its record, in `idempotency`, is what
-- makes a retry replay): not unique here, since a key may be used again once its record
-- is past its retention.
CREATE INDEX payments_by_key ON payments (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX payments_by_status ON payments (status, updated_at);
CREATE INDEX payments_by_authorization ON payments (status, authorized_until);

-- Every processor call of a payment, refund or payout (parent_id), in order.
CREATE TABLE payment_attempts (
    parent_id           text COLLATE "C" NOT NULL,
    seq                 bigint NOT NULL,
    operation           text    NOT NULL,
    processor           text    NOT NULL,
    reference           text COLLATE "C" NOT NULL UNIQUE,
    amount              bigint NOT NULL,
    outcome             text,
    decline_code        text,
    error               text,
    processor_reference text,
    latency_ms          double precision,
    routing             text,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL,
    PRIMARY KEY (parent_id, seq)
);

CREATE TABLE refunds (
    id                  text COLLATE "C" PRIMARY KEY,
    payment_id          text COLLATE "C" NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text    NOT NULL,
    status              text    NOT NULL,
    processor           text,
    hold_id             text COLLATE "C",
    processor_reference text,
    attempt_count       bigint NOT NULL DEFAULT 0,
    failure_code        text,
    decline_code        text,
    idempotency_key     text COLLATE "C",
    version             bigint NOT NULL,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL
);
CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at);
CREATE INDEX refunds_by_status ON refunds (status, updated_at);

CREATE TABLE payouts (
    id                  text COLLATE "C" PRIMARY KEY,
    wallet_account_id   text COLLATE "C" NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            text    NOT NULL,
    destination         text    NOT NULL,
    status              text    NOT NULL,
    processor           text,
    hold_id             text COLLATE "C",
    processor_reference text,
    attempt_count       bigint NOT NULL DEFAULT 0,
    failure_code        text,
    decline_code        text,
    failure_detail      text,
    idempotency_key     text COLLATE "C",
    version             bigint NOT NULL,
    created_at          bigint NOT NULL,
    updated_at          bigint NOT NULL
);
CREATE INDEX payouts_by_status ON payouts (status, updated_at);

-- Events for webhooks, written in the transaction of the change they report. The
-- timestamp (the shard's sequence) orders them; delivery fields belong to the sender.
CREATE TABLE payment_events (
    id            text COLLATE "C" PRIMARY KEY,
    type          text    NOT NULL,
    object_id     text COLLATE "C" NOT NULL,
    payload       text    NOT NULL,
    created_at    bigint NOT NULL,
    timestamp     bigint NOT NULL UNIQUE,
    delivered_at  bigint,
    claimed_by    text,
    claimed_until bigint NOT NULL DEFAULT 0,
    attempts      bigint NOT NULL DEFAULT 0
);
CREATE INDEX payment_events_undelivered ON payment_events (timestamp)
    WHERE delivered_at IS NULL;
CREATE INDEX payment_events_by_object ON payment_events (object_id, timestamp);
