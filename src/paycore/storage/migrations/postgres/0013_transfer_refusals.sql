-- Schema v13: refusals kept under a transfer id (see paycore.ledger.refusals).
-- A transfer id is an idempotency key, failures included: an item refused for a reason
-- that depends on state (insufficient_funds, account_not_found, a hold already posted...)
-- keeps that answer here, in the transaction that refused it, so that the same id resent
-- later gets the same refusal (same fields) or transfer_exists_with_different_fields
-- (other fields), never a new effect. One row per id and tenant: a refusal is replayed
-- only to the tenant whose command it refused ('' for paycore's own workflows). Ids and
-- tenants compare byte-wise (COLLATE "C", as since 0004).
-- The fingerprint is a SHA-256 (hex) of the request's fields; code and detail are the
-- answer given. Rows are kept for ever, like transfers (nothing purges them); they are
-- not transfers: the audit and every read of transfers ignore them.

CREATE TABLE transfer_refusals (
    id          text COLLATE "C" NOT NULL,
    tenant      text COLLATE "C" NOT NULL,
    fingerprint text   NOT NULL,
    code        text   NOT NULL,
    detail      text   NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (id, tenant)
);
