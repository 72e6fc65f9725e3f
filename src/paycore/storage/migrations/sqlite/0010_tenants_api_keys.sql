-- Schema v10: tenants and API keys (see paycore.api.auth and paycore.storage.keys).
-- (0009 belongs to another change; versions need not be contiguous.)

-- Every account belongs to one tenant, set at creation and never changed. Accounts
-- made before tenants existed belong to 'default'; paycore's own accounts (clearing,
-- processors) to the system tenant '', which no client tenant can be.
ALTER TABLE accounts ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
UPDATE accounts SET tenant = '' WHERE id LIKE 'clearing:%' OR id LIKE 'psp:%';

-- API keys, kept on one shard of a cluster (the first). The secret is never stored:
-- only its SHA-256 (hex). scopes: comma-separated (read, write, admin). Timestamps in
-- ns; a key is valid while revoked_at is NULL or in the future (a rotation's grace).
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    replaced_by TEXT
) WITHOUT ROWID;
