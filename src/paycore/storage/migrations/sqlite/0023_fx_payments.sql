-- Schema v23: card payments in a currency other than the merchant account's settle
-- through a conversion (paycore.payments.flows.fx). A payment keeps the rate locked at
-- its authorization (the customer's and the mid rate, exact decimal text) and what the
-- merchant was credited so far in its own currency; a refund keeps what it debits the
-- merchant. All NULL / 0 for a payment in the merchant's currency.
ALTER TABLE payments ADD COLUMN settlement_currency TEXT;
ALTER TABLE payments ADD COLUMN settlement_amount INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN fx_rate TEXT;
ALTER TABLE payments ADD COLUMN fx_mid_rate TEXT;
ALTER TABLE refunds ADD COLUMN settlement_currency TEXT;
ALTER TABLE refunds ADD COLUMN settlement_amount INTEGER NOT NULL DEFAULT 0;
