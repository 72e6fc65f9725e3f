-- Schema v11: every payment event belongs to a tenant (see paycore.workers.webhooks); the
-- same as the SQLite dialect, the tenant compared byte-wise (COLLATE "C", as in 0010).

-- The writer sets it in the transaction that writes the event, from the account that
-- owns the object: a payment's and its refunds' merchant account, a payout's wallet
-- (each on the event's own shard). Events written before are attributed the same way
-- here (tenants came with 0010); one whose object cannot be found (never written so)
-- keeps 'default', the tenant of everything made before tenants existed.
ALTER TABLE payment_events ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
UPDATE payment_events SET tenant = COALESCE(
    CASE
        WHEN type LIKE 'payout.%' THEN (
            SELECT a.tenant FROM payouts o JOIN accounts a ON a.id = o.wallet_account_id
            WHERE o.id = payment_events.object_id)
        WHEN type LIKE 'refund.%' THEN (
            SELECT a.tenant FROM refunds r JOIN payments p ON p.id = r.payment_id
            JOIN accounts a ON a.id = p.merchant_account_id
            WHERE r.id = payment_events.object_id)
        ELSE (
            SELECT a.tenant FROM payments p JOIN accounts a ON a.id = p.merchant_account_id
            WHERE p.id = payment_events.object_id)
    END,
    'default');
