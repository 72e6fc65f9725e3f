-- Schema v10: tenants and API keys (see paycore.api.auth and paycore.storage.keys); the
-- same as the SQLite dialect. (0009 belongs to another change; versions need not be
-- contiguous.)

-- Every account belongs to one tenant, set at creation and never changed. Accounts
-- made before tenants existed belong to 'default'; paycore's own accounts (clearing,
-- processors) to the system tenant '', which no client tenant can be.
ALTER TABLE accounts ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
UPDATE accounts SET tenant = '' WHERE id LIKE 'clearing:%' OR id LIKE 'psp:%';

-- API keys, kept on one shard of a cluster (the first). The secret is never stored:
-- only its SHA-256 (hex). scopes: comma-separated (read, write, admin). Timestamps in
-- ns; a key is valid while revoked_at is NULL or in the future (a rotation's grace).
CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,
    tenant      text COLLATE "C" NOT NULL,
    scopes      text   NOT NULL,
    secret_hash text   NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint,
    revoked_at  bigint,
    replaced_by text COLLATE "C"
);
