-- Schema v19: FX quotes (paycore.fx, paycore.storage.fx_quotes), kept on the key shard
-- like API keys so every API node finds one. Written once, never updated: a quote is
-- used when its conversion's transfers (fx.<id>.*) exist. Amounts in minor units; the
-- rates as exact decimal text (never floats); times in ns.
CREATE TABLE fx_quotes (
    id            TEXT PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    sell_currency TEXT    NOT NULL,
    buy_currency  TEXT    NOT NULL,
    sell_amount   INTEGER NOT NULL,
    buy_amount    INTEGER NOT NULL,
    spread_amount INTEGER NOT NULL,
    rate          TEXT    NOT NULL,
    mid_rate      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
) WITHOUT ROWID;
-- A tenant's quotes in order of creation (GET /v1/fx/quotes).
CREATE INDEX fx_quotes_by_tenant ON fx_quotes (tenant, created_at, id);
