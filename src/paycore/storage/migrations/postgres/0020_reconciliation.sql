-- Schema v20: reconciliation with processors' settlement reports (paycore.reconciliation,
-- paycore.storage.reconciliation); the same as the SQLite dialect. Kept on the key shard
-- like FX quotes. Amounts in minor units; times in ns.
CREATE TABLE reconciliation_reports (
    processor       text COLLATE "C" NOT NULL,
    batch_id        text COLLATE "C" NOT NULL,
    digest          text   NOT NULL,
    settlement_date text   NOT NULL,
    payout_date     text   NOT NULL,
    lines           bigint NOT NULL,
    matched         bigint NOT NULL,
    exceptions      bigint NOT NULL,
    imported_at     bigint NOT NULL,
    PRIMARY KEY (processor, batch_id)
);
-- The references settled so far (a capture or refund matched 1:1), by processor.
CREATE TABLE reconciliation_settled (
    processor text COLLATE "C" NOT NULL,
    reference text COLLATE "C" NOT NULL,
    batch_id  text COLLATE "C" NOT NULL,
    amount    bigint NOT NULL,
    PRIMARY KEY (processor, reference)
);
-- The exception queue: what did not match, with a reason, until an operator resolves it.
CREATE TABLE reconciliation_exceptions (
    id              text COLLATE "C" PRIMARY KEY,
    processor       text COLLATE "C" NOT NULL,
    batch_id        text COLLATE "C" NOT NULL,
    reason          text   NOT NULL,
    reference       text COLLATE "C" NOT NULL,
    line_no         bigint NOT NULL,
    currency        text   NOT NULL,
    expected_amount bigint,
    reported_amount bigint,
    detail          text   NOT NULL,
    status          text   NOT NULL,
    note            text,
    created_at      bigint NOT NULL,
    resolved_at     bigint
);
CREATE INDEX reconciliation_exceptions_by_processor
    ON reconciliation_exceptions (processor, status, created_at, id);
CREATE INDEX reconciliation_exceptions_by_reference
    ON reconciliation_exceptions (processor, reference);
