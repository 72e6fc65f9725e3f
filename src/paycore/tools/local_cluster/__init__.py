"""``paycore cluster``: a complete HA cluster (Patroni/etcd PostgreSQL shards, Redis, nginx,
API nodes) as local processes in one data directory, with its drills and throughput run.
Not to be confused with ``paycore.cluster``, the product's sharding."""
