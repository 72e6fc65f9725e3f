"""Tooling that exercises paycore; none of it is the product a node runs.

``demo`` (``paycore demo``: a workload through the real API, checked promise by promise),
``bench`` (``paycore bench`` and the simulated acquirer's benchmark), ``local_cluster``
(``paycore cluster``: a whole HA cluster as local processes, its drills and its
throughput run), and what they share: ``loadgen`` (an HTTP load generator in its own
process) and ``local_postgres`` (a throwaway PostgreSQL server). Operator commands that
run against a real deployment (audit, migrate, keys) live in ``paycore.ops``.

Only the CLI (and ``paycore.chaos``, itself a harness) imports from here; a hygiene test
(``tests/hygiene/test_imports.py``) keeps it so.
"""
