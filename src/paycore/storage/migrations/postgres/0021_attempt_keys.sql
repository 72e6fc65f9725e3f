-- Schema v21: each processor attempt names the Idempotency-Key of the request that made
-- it; the same as the SQLite dialect.
ALTER TABLE payment_attempts ADD COLUMN idempotency_key text COLLATE "C";
