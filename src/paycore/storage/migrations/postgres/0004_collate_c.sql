-- Schema v4: ids compare byte-wise, as the core compares them.
-- The core orders ids by their bytes (cursor pagination, the sorted lock order, ties in
-- the auditor's reads), and so does SQLite. A text column without a COLLATE takes the
-- database's default collation, which sorts by a locale (en_US: 'a' < 'B' < 'b') when the
-- database was created with one. "C" is byte order, whatever the database's locale.
--
-- Every column an id is looked up, joined, ordered or range-scanned by gets it, not only
-- the ordered ones: an index is used for a comparison only when both share a collation,
-- so accounts.id and account_metadata.id (joined on each read) must change together.
-- Equality is byte-wise under any deterministic collation, so no answer but the order
-- changes. Changing a collation rewrites no table but rebuilds the indexes on those
-- columns under an exclusive lock: on a large ledger, run `paycore migrate` in a quiet
-- window rather than at a node's start-up.

ALTER TABLE accounts
    ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE account_metadata
    ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE transfers
    ALTER COLUMN id                TYPE text COLLATE "C",
    ALTER COLUMN debit_account_id  TYPE text COLLATE "C",
    ALTER COLUMN credit_account_id TYPE text COLLATE "C",
    ALTER COLUMN pending_id        TYPE text COLLATE "C";

ALTER TABLE transfer_metadata
    ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE pending_transfers
    ALTER COLUMN id          TYPE text COLLATE "C",
    ALTER COLUMN resolved_by TYPE text COLLATE "C";

ALTER TABLE account_balances
    ALTER COLUMN account_id TYPE text COLLATE "C";

ALTER TABLE idempotency
    ALTER COLUMN key TYPE text COLLATE "C";

ALTER TABLE outbox
    ALTER COLUMN transfer_id       TYPE text COLLATE "C",
    ALTER COLUMN debit_account_id  TYPE text COLLATE "C",
    ALTER COLUMN credit_account_id TYPE text COLLATE "C";

ALTER TABLE transfer_ids
    ALTER COLUMN id TYPE text COLLATE "C";
