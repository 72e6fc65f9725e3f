"""Which payment, refund or payout made a ledger transfer, from the transfer's id."""

from __future__ import annotations

from typing import Final

from paycore.cluster.namespaces import FX_TRANSFER_PREFIX, PAYMENT_TRANSFER_PREFIX

__all__ = ["made_by"]

# A payment's, refund's or payout's ledger transfers are ``pm.<its id>.<step>`` (a card
# payment settled through a conversion: ``fx.<its id>.<step>.<leg>``); its id's prefix
# says which it is (``paycore.payments.accounts``).
_KINDS: Final = {"pay_": "payment", "re_": "refund", "po_": "payout"}


def made_by(transfer_id: str) -> tuple[str | None, str | None]:
    """(kind, id) of the payment, refund or payout that made a ledger transfer; Nones
    for a client's transfer."""
    if transfer_id.startswith(FX_TRANSFER_PREFIX):
        owner = transfer_id[len(FX_TRANSFER_PREFIX) :].partition(".")[0]
    elif transfer_id.startswith(PAYMENT_TRANSFER_PREFIX):
        owner = transfer_id[len(PAYMENT_TRANSFER_PREFIX) :].rpartition(".")[0]
    else:
        return None, None
    for prefix, kind in _KINDS.items():
        if owner.startswith(prefix):
            return kind, owner
    return None, None
