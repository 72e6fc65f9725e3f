-- Schema v15: indexes for the list endpoints (paycore.storage.listing), so that a page
-- is one walk of an index from the previous page's key, whatever the shard's size.
-- Listings are ordered by (time, id); each index leads with a listing's equality filter.
-- The owner expressions are written exactly as paycore.storage.listing.owner_sql
-- writes them in its queries (the planner only uses an index on the same expression).

-- GET /v1/accounts: a tenant's accounts.
CREATE INDEX accounts_by_tenant ON accounts (tenant, timestamp, id);

-- GET /v1/transfers: a tenant's transfers ('t/' ids; '' for the default tenant; '.' for
-- paycore's own xs. and pm. transfers, which no tenant lists). The rowid is the
-- timestamp, unique per shard.
CREATE INDEX transfers_by_owner ON transfers (
    (CASE WHEN substr(id, 1, 3) IN ('xs.', 'pm.') THEN '.' ELSE substr(id, 1, instr(id, '/')) END),
    timestamp
);

-- GET /v1/payments: a tenant's (its merchant accounts'), or one merchant account's.
CREATE INDEX payments_by_owner ON payments (
    substr(merchant_account_id, 1, instr(merchant_account_id, '/')), created_at, id
);
CREATE INDEX payments_by_merchant ON payments (merchant_account_id, created_at, id);

-- GET /v1/payouts: a tenant's (its wallets'), or one wallet's.
CREATE INDEX payouts_by_owner ON payouts (
    substr(wallet_account_id, 1, instr(wallet_account_id, '/')), created_at, id
);
CREATE INDEX payouts_by_wallet ON payouts (wallet_account_id, created_at, id);

-- GET /v1/refunds without payment_id: by time (refunds_by_payment serves one payment's).
CREATE INDEX refunds_by_time ON refunds (created_at, id);
