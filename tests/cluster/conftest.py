"""The cluster tests' fixtures, defined in ``cluster_fixtures`` and registered here.

They live in their own module so that strict mypy checks them: it names the modules of
this directory top-level (as pytest imports them, ``from cluster_support import ...``),
and a top-level ``conftest`` is already the suite's own (tests/conftest.py). mypy
skips this file; pytest finds the fixtures through these names, scoped to this directory
as if they were defined here.
"""

from cluster_fixtures import cluster, cluster_databases, relay_path, wallets

__all__ = ["cluster", "cluster_databases", "relay_path", "wallets"]
