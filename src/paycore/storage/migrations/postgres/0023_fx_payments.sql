-- Schema v23: a payment's settlement through a conversion (its locked rates and what
-- the merchant was credited in its own currency), a refund's debit of the merchant;
-- the same as the SQLite dialect.
ALTER TABLE payments ADD COLUMN settlement_currency text;
ALTER TABLE payments ADD COLUMN settlement_amount bigint NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN fx_rate text;
ALTER TABLE payments ADD COLUMN fx_mid_rate text;
ALTER TABLE refunds ADD COLUMN settlement_currency text;
ALTER TABLE refunds ADD COLUMN settlement_amount bigint NOT NULL DEFAULT 0;
