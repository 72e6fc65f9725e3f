"""Benchmarks.

``paycore bench`` (transfers/s): ``transfers`` runs it; ``options`` (the parser and the
command that reproduces a run), ``inproc`` (batches through the store), ``over_http``
(a ``paycore serve`` subprocess under ``tools.loadgen``), ``rss`` (server memory),
``pg_target`` (the PostgreSQL servers and databases), ``pgbench`` (the yardstick),
``postgres`` (the scenarios over PostgreSQL), ``report`` (results, targets, printing),
``report_dir`` (``--report DIR``: the markdown table and PNG charts beside the last run).

``acquirer_sim``: authorizations/s of a running simulated acquirer.
"""
