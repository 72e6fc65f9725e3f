"""Operations: the ledger auditor, the demo and the benchmark behind the CLI."""

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
