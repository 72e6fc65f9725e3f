"""Pure decisions of the payment flows: a row and a processor's answer (or the ledger's
refusal) to the next row, its transfers and its events, as one ``Step`` to commit.

Nothing here reads or writes a store or calls a processor; ``now`` is given, and the only
thing drawn is a new event's id (``rows`` builds the parts). The flows (``card``,
``wallet``, ``capture``, ``refund``, ``payout``, ``resolver``) commit what they return.

- ``step``: the ``Step``, the ledger refusals that are the request's fault, and the
  parts every family builds from;
- one module per flow family: ``authorize`` (a card payment's authorization and its
  give-back), ``capture`` (capture and cancel) and ``wallet``.
"""

from paycore.payments.flows.outcomes.authorize import authorization, give_back, given_back
from paycore.payments.flows.outcomes.capture import (
    back_to_capturable,
    captured,
    captured_after_expiry,
    released,
    released_after_expiry,
)
from paycore.payments.flows.outcomes.step import REQUEST_CODES, Step, unknown
from paycore.payments.flows.outcomes.wallet import wallet_refused, wallet_transferred

__all__ = [
    "REQUEST_CODES",
    "Step",
    "authorization",
    "back_to_capturable",
    "captured",
    "captured_after_expiry",
    "give_back",
    "given_back",
    "released",
    "released_after_expiry",
    "unknown",
    "wallet_refused",
    "wallet_transferred",
]
