-- Schema v8: processor notifications are purged by age (the maintenance worker), so
-- they get an index on when they were received. Payment events are purged by their
-- timestamp, which is indexed already.

CREATE INDEX processor_events_received ON processor_events (received_at);
