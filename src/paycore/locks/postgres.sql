-- The lease table of paycore.locks.postgres, created (idempotently) by the lock service
-- itself at first use. One row per lock name, kept after release: it carries the last
-- fencing token issued for that name. A free lock has no owner, or an expired lease.
CREATE TABLE IF NOT EXISTS lock_leases (
    name          text PRIMARY KEY,
    owner         text,
    fencing_token bigint NOT NULL,
    expires_at    timestamptz NOT NULL
);
