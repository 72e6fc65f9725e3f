"""Refusals kept under a transfer id, so that a retry can never change an answer.

A transfer id is itself an idempotency key (the API contract): the same id with the same
fields gets the first answer again, failures included. A stored transfer answers its own
retries (``WorkingSet._exists``); a refused one left nothing behind, so without a record
a transfer refused for ``insufficient_funds`` and resent unchanged after the account was
funded would be posted. TigerBeetle answers such a retry with ``id_already_failed``; ours
gets the same refusal again (same code, same detail) and has no effect.

What is kept, on the shard that refused it and in the transaction that refused it
(table ``transfer_refusals``, migration 0013): the id, the tenant of the command, a
fingerprint of the request (``fingerprint``), the code and the detail. A later item with
that id, for that tenant:

* same fields: the same refusal again, without being tried (the balance may be there now);
* other fields: ``transfer_exists_with_different_fields``, as for a stored transfer.

Only refusals that depend on the ledger's state are kept (``KEPT_REFUSALS``): bad input
changes nothing and gets the same answer again anyway, and an id whose request was
malformed stays free for the corrected request.

Linked chains: the item that failed for a state reason is kept; the other items of its
chain (``linked_event_failed``) are not. Resent as it was, the chain meets the kept
refusal at the same item and fails again, so every item gets its first answer again and
nothing of the chain takes effect; the others' ids stay free (they never failed on their
own: TigerBeetle keeps no record for them either). A chain left open at the end of the
batch (``linked_event_chain_open``) is malformed input: nothing of it is kept.

Tenants: a refusal is replayed only to the tenant whose command it refused (paycore's own
workflows, which act for no tenant, use ``SYSTEM_TENANT``). To another tenant the id is
as if never refused: its request is tried like any other, and its own refusal, if any, is
kept beside the first one. Nothing of one tenant's refusals shows to another.

Retention: for ever, like the transfers themselves (TigerBeetle keeps failed ids for
ever too): a retry may come at any time, and a row is small (no metadata, a 64-char
fingerprint). Nothing purges them; ``paycore audit`` does not count them as transfers.

Paycore's own steps that post or void a saga's or a payment's hold (``settlement``
commands) keep none: they are retried until they complete, under derived ids, and their
outcome is kept by their own records (the outbox row, the payment's rows, written in the
same transaction). The settlement's credit step keeps every refusal, in its own way
(``CreateTransfers.refusals_key``).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from paycore.errors import ErrorCode
from paycore.ledger.model import (
    SETTLEMENT_METADATA_KEY,
    SYSTEM_TENANT,
    TransferFlags,
    TransferRequest,
)

__all__ = ["KEPT_REFUSALS", "Refusal", "as_sent", "fingerprint", "refusal_tenant"]

_E = ErrorCode

# The refusals kept under the id: those that depend on the ledger's state, which may
# change, so that a retry could otherwise get another answer. Decided per code:
KEPT_REFUSALS: Final[frozenset[ErrorCode]] = frozenset(
    {
        _E.ACCOUNT_NOT_FOUND,  # the account may be created later
        _E.ACCOUNT_CLOSED,  # depends on the account (closing is not undone today)
        _E.CURRENCY_MISMATCH,  # against the accounts' or the hold's currency
        _E.INSUFFICIENT_FUNDS,  # the balance moves: the reported fault
        _E.EXCEEDS_CREDIT_LIMIT,  # likewise
        _E.OVERFLOW,  # counters move both ways
        _E.PENDING_TRANSFER_NOT_FOUND,  # the hold may be created later
        _E.PENDING_TRANSFER_NOT_PENDING,  # depends on the stored transfer it names
        _E.PENDING_TRANSFER_ALREADY_POSTED,  # the hold's state
        _E.PENDING_TRANSFER_ALREADY_VOIDED,
        _E.PENDING_TRANSFER_EXPIRED,
        _E.AMOUNT_EXCEEDS_PENDING_AMOUNT,  # against the hold's amount
    }
)
# TigerBeetle keeps fewer ("transient" results: accounts not found or closed, pending
# transfer not found, exceeds credits/debits), those after which the same request could
# succeed; the others here can never turn into an effect, but keeping them is what makes
# the answer itself never change (a post refused for its amount would later answer
# pending_transfer_already_posted once the hold is captured by another transfer).
# Not kept, and why:
# - invalid_request, accounts_must_be_different, timeout_reserved_for_pending_transfer,
#   linked_event_chain_open: the request alone decides them (bad input changes nothing;
#   a few invalid_request depend on an immutable hold, e.g. a void of part of it, and
#   give the same answer again anyway). A pending_id that is not a valid id at all is
#   refused as pending_transfer_not_found before any state is read: not kept either.
# - transfer_exists_with_different_fields: the transfer (or the id's reservation on
#   another shard) that caused it is stored for good and answers again.
# - linked_event_failed: see the module docstring (the chain's failing item is kept).
# - transfer_in_flight: retryable (a cross-shard hold still being set up after a fault).


class Refusal(msgspec.Struct, frozen=True):
    """A kept refusal of transfer ``id`` for ``tenant`` (see the module docstring)."""

    id: str
    tenant: str  # the refused command's tenant; SYSTEM_TENANT for paycore's own
    fingerprint: str
    code: ErrorCode
    detail: str
    created_at: int  # ns, the refusing transaction's clock


def refusal_tenant(tenant: str | None) -> str:
    """The tenant a refusal is kept for: a command's, or paycore's own (None)."""
    return SYSTEM_TENANT if tenant is None else tenant


_canonical = msgspec.json.Encoder(order="sorted")


def fingerprint(r: TransferRequest) -> str | None:
    """What makes two items with one id "the same request": the fields that
    ``WorkingSet._exists`` compares, as given (an absent field differs from a given one).

    Flags count by the names of those set, so that a flag added later (false by default)
    leaves every kept fingerprint valid. None when the request cannot be encoded (metadata
    nested past the encoder's depth: the API refuses such bodies); such a refusal is
    answered but not kept, and such a request never matches a kept one.
    """
    r = as_sent(r)
    flags = [name for name in r.flags.__struct_fields__ if getattr(r.flags, name)]
    fields = [
        r.debit_account_id,
        r.credit_account_id,
        r.amount,
        r.currency,
        r.code,
        flags,
        r.pending_id,
        r.timeout_seconds,
        r.metadata,
    ]
    try:
        encoded = _canonical.encode(fields)
    except (RecursionError, TypeError):
        return None
    return hashlib.sha256(encoded).hexdigest()


def as_sent(r: TransferRequest) -> TransferRequest:
    """``r`` as its client sent it, when the cluster router rewrote it as a step of a
    cross-shard saga (step 1's hold, or a post or void of a hold across shards); the note
    under ``SETTLEMENT_METADATA_KEY`` says how. A refusal is then kept, and compared, by
    the client's request on every path: step 1, a chain's plan, a resend inside a chain."""
    note = None if r.metadata is None else r.metadata.get(SETTLEMENT_METADATA_KEY)
    if not isinstance(note, dict) or note.get("role") not in ("hold", "resolve"):
        return r
    metadata = None
    if note.get("client_metadata"):
        metadata = {k: v for k, v in (r.metadata or {}).items() if k != SETTLEMENT_METADATA_KEY}
    if note["role"] == "hold":
        flags = TransferFlags(
            pending=bool(note.get("pending")), balancing=r.flags.balancing, linked=r.flags.linked
        )
        credit = note.get("credit_account_id")
        return msgspec.structs.replace(
            r,
            credit_account_id=credit if isinstance(credit, str) else r.credit_account_id,
            flags=flags,
            metadata=metadata,
        )
    given = note.get("given")
    debit, credit = given if isinstance(given, list) and len(given) == 2 else (None, None)
    return msgspec.structs.replace(
        r, debit_account_id=debit, credit_account_id=credit, metadata=metadata
    )
