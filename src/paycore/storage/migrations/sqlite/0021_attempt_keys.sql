-- Schema v21: each processor attempt names the Idempotency-Key of the request that made
-- it (paycore.payments.flows.work): a retry that resumes a claimed capture or cancel
-- knows the claimed work was recorded only when an attempt carries its key, never from
-- another request's attempt of the same number. '' = made without a key; NULL = made
-- before this migration.
ALTER TABLE payment_attempts ADD COLUMN idempotency_key TEXT;
