"""How a cross-shard saga's rows show in timestamps and balance history: as one shard's.

A transfer between accounts on two shards is stored as a saga's steps (see
``paycore.cluster.settlement``): a hold on the debit account's shard (A), a credit leg
on the credit account's shard (B), then the hold posted (or voided, when B refused).
One shard would write one transfer, one timestamp, one balance row per account. So:

* B's leg takes the transfer's own timestamp (carried in the saga's note) unless B's
  shard has already given a later one; then the next free one. Sequentially (nothing
  else written on B meanwhile) B's listing and balance history show exactly the
  transfer's timestamp, and ``?at=`` that timestamp finds the credit;
* while such a hold of a ``history`` account A is in flight, every balance row of A
  shows its amount as posted (it is, once the saga ends, which the request awaits
  before answering): the hold's own row, and any other row of A meanwhile. The step
  that posts the hold writes no row of A (nothing changes as shown); a saga
  compensated after step 1 shows as a row that takes the amount back.

The holds in flight of ``history`` accounts are kept by the store (table
``saga_holds_in_flight``, schema 16), so a row written by another transaction while a
hold is in flight is shown the same way. Rows written before schema 16 (timestamps up
to ``shard_meta`` ``saga_history_since``) show the hold as pending and its post as a row
of its own. ``paycore.ops.audit`` replays balance rows by these same rules.
"""

from __future__ import annotations

from typing import Any

from paycore.ledger.model import SETTLEMENT_METADATA_KEY, Transfer, TransferRequest

__all__ = ["is_closing_hold", "is_posted_saga_hold", "leg_timestamp", "saga_role"]


def saga_role(metadata: dict[str, Any] | None) -> str | None:
    """The role a saga gave a transfer it wrote (``hold``, ``credit``, ``post``...), or
    None for a client's own transfer."""
    note = None if metadata is None else metadata.get(SETTLEMENT_METADATA_KEY)
    if not isinstance(note, dict):
        return None
    role = note.get("role")
    return role if isinstance(role, str) else None


def leg_timestamp(r: TransferRequest) -> int | None:
    """The timestamp a saga's credit leg should take (its transfer's), if it has one."""
    if saga_role(r.metadata) != "credit":
        return None
    assert r.metadata is not None
    timestamp = r.metadata[SETTLEMENT_METADATA_KEY].get("timestamp")
    return timestamp if type(timestamp) is int and timestamp > 0 else None


def is_posted_saga_hold(t: Transfer) -> bool:
    """``t`` is the hold step 1 wrote for a posted transfer across shards (not a client's
    own hold across shards, which is pending for the client too)."""
    if not t.flags.pending or saga_role(t.metadata) != "hold":
        return False
    assert t.metadata is not None
    return not t.metadata[SETTLEMENT_METADATA_KEY].get("pending")


def is_closing_hold(t: Transfer) -> bool:
    """``t`` is the hold that took a closed account's remainder to another shard: its
    void (the target refused the credit) reopens the account."""
    if saga_role(t.metadata) != "hold":
        return False
    assert t.metadata is not None
    return bool(t.metadata[SETTLEMENT_METADATA_KEY].get("closing"))
