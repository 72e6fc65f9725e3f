"""Operator commands run against a deployment: ``audit`` (the ledger auditor), ``migrate``
(schema migrations) and ``keys`` (API keys). The demo, the benchmarks and the local
cluster harness are tooling: ``paycore.tools``."""

from paycore.ops.audit import (
    AuditReport,
    CurrencyTotals,
    Violation,
    ViolationKind,
    audit_store,
    check_snapshot,
)

__all__ = [
    "AuditReport",
    "CurrencyTotals",
    "Violation",
    "ViolationKind",
    "audit_store",
    "check_snapshot",
]
