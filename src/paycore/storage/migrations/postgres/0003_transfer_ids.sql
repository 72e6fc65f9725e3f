-- Schema v3: transfer-id reservations, so a transfer id is unique across shards.
-- A transfer is stored on the shard of its debit account; its id hashes to a slot of
-- its own. When the two shards differ, the router first reserves the id on the id's
-- shard ("this id is stored on shard X"), and a later request with the same id and a
-- debit account elsewhere meets that row (see paycore.cluster.router).

CREATE TABLE transfer_ids (
    id          text PRIMARY KEY,
    shard       text   NOT NULL,
    reserved_at bigint NOT NULL
);
