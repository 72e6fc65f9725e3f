-- Schema v14: the client's flags (balancing, linked) and hold timeout of a cross-shard
-- transfer on its outbox row, so that the credit leg on the target shows them as the
-- source's hold does (paycore.cluster.settlement.credit_leg); rows written before keep 0.

ALTER TABLE outbox ADD COLUMN flags integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN timeout_seconds integer NOT NULL DEFAULT 0;
