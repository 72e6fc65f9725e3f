-- Schema v20: reconciliation with processors' settlement reports (paycore.reconciliation,
-- paycore.storage.reconciliation), kept on the key shard like FX quotes. A report is
-- recorded once with what it settled and the exceptions it raised; amounts in minor
-- units; times in ns.
CREATE TABLE reconciliation_reports (
    processor       TEXT    NOT NULL,
    batch_id        TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    settlement_date TEXT    NOT NULL,
    payout_date     TEXT    NOT NULL,
    lines           INTEGER NOT NULL,
    matched         INTEGER NOT NULL,
    exceptions      INTEGER NOT NULL,
    imported_at     INTEGER NOT NULL,
    PRIMARY KEY (processor, batch_id)
) WITHOUT ROWID;
-- The references settled so far (a capture or refund matched 1:1), by processor.
CREATE TABLE reconciliation_settled (
    processor TEXT    NOT NULL,
    reference TEXT    NOT NULL,
    batch_id  TEXT    NOT NULL,
    amount    INTEGER NOT NULL,
    PRIMARY KEY (processor, reference)
) WITHOUT ROWID;
-- The exception queue: what did not match, with a reason, until an operator resolves it.
CREATE TABLE reconciliation_exceptions (
    id              TEXT PRIMARY KEY,
    processor       TEXT    NOT NULL,
    batch_id        TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    line_no         INTEGER NOT NULL,
    currency        TEXT    NOT NULL,
    expected_amount INTEGER,
    reported_amount INTEGER,
    detail          TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    resolved_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX reconciliation_exceptions_by_processor
    ON reconciliation_exceptions (processor, status, created_at, id);
CREATE INDEX reconciliation_exceptions_by_reference
    ON reconciliation_exceptions (processor, reference);
