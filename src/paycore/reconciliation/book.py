"""The bookings of a settlement report: a chart of accounts and one linked chain (pure).

Chart (per processor and currency, ids reserved in ``cluster.namespaces``, owned by
the system tenant):

- ``recon:bank:<processor>:<CUR>``: the bank account the processor pays out to; debited
  with each batch total's net (what arrives on the payout date).
- ``recon:fees:<processor>:<CUR>``: fees the processor kept (and differences within the
  matching tolerance); debited.
- ``recon:chargebacks:<processor>:<CUR>``: amounts charged back, to recover from the
  merchants; debited.
- ``recon:suspense:<processor>:<CUR>``: what the processor paid for lines that did not
  match (unknown references, duplicates, amount differences, a total that is not the sum
  of its lines); credited until an operator resolves the exception and moves it.
- ``psp:<shard>:<processor>:<CUR>`` (the payments'): credited with the captures less the
  refunds a report settled, so its balance is what the processor still owes us.

A report's bookings in one currency are one linked chain (all or nothing), its legs
moving money through the bank account: ``psp -> bank`` per shard, ``bank -> fees``,
``bank -> chargebacks``, ``bank <- suspense`` (a negative amount turns a leg around, a
zero one is left out). The ids ``rc.<hash of processor, batch, currency>.<leg>`` are
derived from the report, so importing it again books nothing twice: the ledger answers
each id with the transfer it already holds.
"""

from __future__ import annotations

import hashlib

import msgspec

from paycore.cluster.namespaces import RECON_ACCOUNT_PREFIX, RECON_TRANSFER_PREFIX
from paycore.ledger.model import SYSTEM_TENANT, AccountRequest, TransferFlags, TransferRequest
from paycore.payments.accounts import psp_account_id
from paycore.reconciliation.match import Legs

__all__ = ["ROLES", "account_id", "account_requests", "chain", "transfer_prefix"]

ROLES = ("bank", "fees", "chargebacks", "suspense")


def account_id(role: str, processor: str, currency: str) -> str:
    return f"{RECON_ACCOUNT_PREFIX}{role}:{processor}:{currency}"


def account_requests(processor: str, *currencies: str) -> tuple[AccountRequest, ...]:
    """The chart's accounts of ``processor`` in ``currencies`` (creating one again: no-op)."""
    return tuple(
        AccountRequest(
            account_id(role, processor, c),
            c,
            metadata={"role": f"recon_{role}", "processor": processor},
            tenant=SYSTEM_TENANT,
        )
        for c in dict.fromkeys(currencies)
        for role in ROLES
    )


def transfer_prefix(processor: str, batch_id: str, currency: str) -> str:
    digest = hashlib.sha256(f"{processor}\x1f{batch_id}\x1f{currency}".encode()).hexdigest()
    return f"{RECON_TRANSFER_PREFIX}{digest[:24]}."


def chain(processor: str, batch_id: str, currency: str, legs: Legs) -> list[TransferRequest]:
    """The linked chain booking ``legs`` (empty when nothing moves)."""
    prefix = transfer_prefix(processor, batch_id, currency)
    bank = account_id("bank", processor, currency)
    moves: list[tuple[str, str, str, int]] = [  # leg, debit, credit, amount
        (f"psp.{home}", bank, psp_account_id(home, processor, currency), amount)
        for home, amount in sorted(legs.psp.items())
    ]
    moves.append(("fees", account_id("fees", processor, currency), bank, legs.fees))
    moves.append(
        ("chargebacks", account_id("chargebacks", processor, currency), bank, legs.chargebacks)
    )
    moves.append(("suspense", bank, account_id("suspense", processor, currency), legs.suspense))
    items: list[TransferRequest] = []
    for leg, debit, credit, amount in moves:
        if amount == 0:
            continue
        turned = amount < 0
        items.append(
            TransferRequest(
                id=prefix + leg,
                debit_account_id=credit if turned else debit,
                credit_account_id=debit if turned else credit,
                amount=abs(amount),
                currency=currency,
                metadata={"settlement_batch": batch_id, "processor": processor},
            )
        )
    linked = TransferFlags(linked=True)
    return [msgspec.structs.replace(item, flags=linked) for item in items[:-1]] + items[-1:]
