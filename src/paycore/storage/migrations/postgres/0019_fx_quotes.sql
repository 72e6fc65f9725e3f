-- Schema v19: FX quotes (paycore.fx, paycore.storage.fx_quotes); the same as the SQLite
-- dialect. Kept on the key shard like API keys so every API node finds one. Written
-- once, never updated: a quote is used when its conversion's transfers (fx.<id>.*)
-- exist. Amounts in minor units; the rates as exact decimal text; times in ns.
CREATE TABLE fx_quotes (
    id            text COLLATE "C" PRIMARY KEY,
    tenant        text COLLATE "C" NOT NULL,
    sell_currency text   NOT NULL,
    buy_currency  text   NOT NULL,
    sell_amount   bigint NOT NULL,
    buy_amount    bigint NOT NULL,
    spread_amount bigint NOT NULL,
    rate          text   NOT NULL,
    mid_rate      text   NOT NULL,
    created_at    bigint NOT NULL,
    expires_at    bigint NOT NULL
);
-- A tenant's quotes in order of creation (GET /v1/fx/quotes).
CREATE INDEX fx_quotes_by_tenant ON fx_quotes (tenant, created_at, id);
