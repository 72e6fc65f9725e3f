-- Schema v9: the hash chain of the shard's history (see paycore.storage.chain and
-- docs/audit-trail.md). Each transfer gets its place in the chain (chain_seq: 1, 2, ...
-- in timestamp order) and its hash (SHA-256 over the previous hash and the transfer's
-- canonical encoding); shard_meta keeps the head: key 'chain_head', value its seq, digest
-- its hash (NULL while the chain is empty: the genesis hash, derived from the shard's name).
--
-- SQL cannot compute the hashes here, so transfers written before this migration are
-- chained by the store when it first opens the shard, in timestamp order, up to the last
-- timestamp recorded now ('chain_backfill_until', only when there are such rows). A row
-- added later without a chain position is never chained after the fact: the audit
-- reports it. Every node must run a version that knows the chain once this is applied.
--
-- No index: the chain is read in timestamp order (the primary key), its seq numbers must
-- follow each other in that order.

ALTER TABLE transfers ADD COLUMN chain_seq INTEGER;
ALTER TABLE transfers ADD COLUMN chain_hash BLOB;
ALTER TABLE shard_meta ADD COLUMN digest BLOB;
INSERT INTO shard_meta (key, value) VALUES ('chain_head', 0);
INSERT INTO shard_meta (key, value)
    SELECT 'chain_backfill_until', value FROM shard_meta
    WHERE key = 'last_timestamp' AND EXISTS (SELECT 1 FROM transfers);
