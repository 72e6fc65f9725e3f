"""Reconciliation with processors' settlement reports (docs/reconciliation.md).

``parse`` reads a report strictly, ``match`` decides every line against paycore's
captures and refunds (pure), ``book`` turns the decision into a linked chain over a
documented chart of accounts (pure), and ``service`` runs an import, the exception
queue and the drift check against a ``Store``.
"""

from __future__ import annotations

from paycore.reconciliation.match import Reason, Rules
from paycore.reconciliation.parse import ReportError, parse_report
from paycore.reconciliation.service import (
    Drift,
    ImportResult,
    ReconciliationError,
    drift,
    drift_of,
    import_lock_name,
    import_report,
    list_exceptions,
    resolution,
    resolve_exception,
    rules_for,
)

__all__ = [
    "Drift",
    "ImportResult",
    "Reason",
    "ReconciliationError",
    "ReportError",
    "Rules",
    "drift",
    "drift_of",
    "import_lock_name",
    "import_report",
    "list_exceptions",
    "parse_report",
    "resolution",
    "resolve_exception",
    "rules_for",
]
