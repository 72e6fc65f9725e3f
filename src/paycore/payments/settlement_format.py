"""The columns of an acquirer's daily settlement report (CSV), in order: what the
acquirer simulator writes and what ``paycore reconcile`` reads (docs/reconciliation.md)."""

from __future__ import annotations

from typing import Final

__all__ = ["COLUMNS"]

COLUMNS: Final = (
    "record",
    "batch_id",
    "settlement_date",
    "payout_date",
    "type",
    "reference",
    "processor_id",
    "currency",
    "count",
    "gross",
    "fee",
    "net",
)
