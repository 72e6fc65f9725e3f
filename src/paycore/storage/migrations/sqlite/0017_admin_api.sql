-- Schema v17: the admin API (paycore.api.routes.api_keys, ...webhook_endpoints).

-- A key's name, what its owner calls it (never a secret); and a tenant's keys listed in
-- order of creation.
ALTER TABLE api_keys ADD COLUMN name TEXT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id);
