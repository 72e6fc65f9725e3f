-- Schema v17: the admin API (paycore.api.routes.api_keys, ...webhook_endpoints).

-- A key's name, what its owner calls it (never a secret); and a tenant's keys listed in
-- order of creation.
ALTER TABLE api_keys ADD COLUMN name TEXT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id);

-- Webhook endpoints made over HTTP, kept on the key shard like API keys. No secret:
-- it is derived from the nodes' signing key, the id and secret_version
-- (paycore.payments.endpoint_secrets); the previous version signs too until
-- previous_secret_until (ns), a rotation's grace. events: comma-separated patterns.
CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    tenant                TEXT    NOT NULL,
    url                   TEXT    NOT NULL,
    events                TEXT    NOT NULL,
    description           TEXT,
    secret_version        INTEGER NOT NULL,
    previous_secret_until INTEGER,
    created_at            INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant, id);

-- An event for one endpoint alone (its id): a test event, or an event redelivered.
ALTER TABLE payment_events ADD COLUMN only_endpoint TEXT;

-- An endpoint's recent deliveries, latest first. (webhook_deliveries.endpoint is a
-- config file endpoint's URL, or an HTTP-made endpoint's id: URLs and ids never meet.)
CREATE INDEX webhook_deliveries_by_endpoint
    ON webhook_deliveries (endpoint, updated_at, event_id);
