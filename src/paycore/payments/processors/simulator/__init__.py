"""The acquirer simulator: a real HTTP server that behaves like a card processor.

``paycore acquirer-sim --name NAME --port P [behaviour flags]`` serves one simulated
acquirer (a test double of an external system, in the spirit of Hyperswitch's dummy
connector): it keeps its records in memory, is idempotent by the reference we send,
and can be made slow, flaky, hanging or down, at start or at run time. Several run
side by side, each on its own port with its own name and behaviour.

Endpoints (JSON bodies; every answer names the ``processor``)::

    POST /v1/authorizations                     {reference, amount, currency,
                                                 card: {number, exp_month, exp_year, cvc},
                                                 capture?: false}
    POST /v1/authorizations/{ref}/captures      {capture_reference, amount}
    POST /v1/authorizations/{ref}/void          (no body; idempotent by {ref})
    POST /v1/authorizations/{ref}/refunds       {refund_reference, amount}
    POST /v1/payouts                            {reference, amount, currency, destination}
    GET  /v1/operations/{ref}                   status of any operation by our reference
    GET  /admin/config   PUT /admin/config      behaviour (PUT: any subset of the fields)
    GET  /admin/stats    POST /admin/reset      counters; reset drops records and counters
    GET  /reports/settlement?date=YYYY-MM-DD    the day's settlement report (CSV), with
                                                seeded anomalies by query (``settlement``)
    GET  /healthz                               {processor, status, down}

Answers: 200 done; 402 declined (``decline_code``); 422 refused (``decline_code``:
``amount_exceeds_authorized``, ``amount_exceeds_captured``, ``authorization_voided``,
``authorization_declined``, ``authorization_fully_captured``); 404
``authorization_not_found`` (a status lookup: ``{"status": "not_found"}``); 409
``reference_reused`` (same reference, other request); 400 ``invalid_request``; 500
``processing_error`` and 503 ``service_unavailable``: nothing was done. The same
reference with the same request gets the first answer again (see ``book``).

Test cards (all Luhn-valid; any expiry in the future, CVC of 3 digits, 4 for Amex)::

    number               brand       outcome of an authorization
    4242 4242 4242 4242  visa        approved
    5555 5555 5555 4444  mastercard  approved
    3782 822463 10005    amex        approved
    4000 0000 0000 9995  visa        402 declined insufficient_funds
    4000 0000 0000 0002  visa        402 declined do_not_honor
    4000 0000 0000 9979  visa        402 declined stolen_card
    4000 0000 0000 0119  visa        500 processing_error; nothing done (status: not_found)
    4000 0000 0000 7775  visa        timeout: authorized and recorded at once, but every
                                     answer about it (replays too) hangs hang_seconds;
                                     only a status lookup tells
    4000 0000 0000 3337  visa        selective: approved, unless this simulator's
                                     ``selective_card`` is error (500), decline
                                     (402 do_not_honor) or timeout (as above)
    any other Luhn-valid number      approved
    not digits, wrong length or Luhn 402 invalid_card
    month not 1-12, year not 4 digits 402 invalid_expiry
    expiry before this month         402 expired_card
    CVC of the wrong length          402 invalid_cvc

Payout destinations (IBAN-like, ``[A-Z]{2}[0-9]{2}[A-Z0-9]{4,30}``)::

    GB00CLOSED00000000   402 declined account_closed
    GB00ERROR000000000   500 processing_error; nothing done
    GB00TIMEOUT0000000   paid out and recorded, the answer hangs
    any other            paid_out

Behaviour (``config.SimulatorConfig``): latency fixed + jitter or log-normal (p50, p99,
cap); ``error_rate`` (503 after the latency, nothing done); ``timeout_rate`` with
``timeout_done_ratio`` (a hang of ``hang_seconds``, the operation done before it or
never); ``down`` and ``outages`` (windows in seconds from now). Down means 503
``service_unavailable`` at once, with ``Connection: close``, before any latency
(``outage_mode = "error"``: a real refused connection needs the socket closed, which
one server with its admin endpoint on the same port cannot do; a connector sees both
as a definite failure), or a hang and then 503 (``"hang"``: a black hole). /admin
and /healthz are never down, slow or faulty.

Modules: ``cards`` (the tables, validation), ``book`` (records and rules, pure),
``messages`` (the request and answer bodies), ``config`` (behaviour, flags), ``app``
(Litestar app, ``serve``), ``process`` (``SimulatorProcess``: run one as a child
process, for tests and the demo), ``bench``
(``python -m paycore.tools.bench.acquirer_sim --url URL``: authorizations/s).

The simulator never logs a card number: answers and log lines carry the last four
digits only; a request is fingerprinted for idempotency with a per-process HMAC key.
"""

from __future__ import annotations

from paycore.payments.processors.simulator.cards import (
    TEST_CARDS,
    TEST_DESTINATIONS,
    CardBehaviour,
    luhn_valid,
)
from paycore.payments.processors.simulator.config import (
    FixedLatency,
    LognormalLatency,
    Outage,
    SimulatorConfig,
)

__all__ = [
    "TEST_CARDS",
    "TEST_DESTINATIONS",
    "CardBehaviour",
    "FixedLatency",
    "LognormalLatency",
    "Outage",
    "SimulatorConfig",
    "luhn_valid",
]
