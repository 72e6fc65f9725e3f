"""The payment flows over one unit of work (see ``paycore.payments.service``).

- ``model``: what the service takes and answers (requests, views, replies, routers);
- ``outcomes`` (payments: one module per flow family) and ``holds`` (refunds, payouts):
  pure decisions: a row and a processor's answer (or the ledger's refusal) to the next
  row, its transfers and its events, as one ``Step``; ``rows``: the pure parts they
  build from, and the checks;
- ``context``: the store, its reads, and processor calls with the router's feedback;
- ``work``: the unit of work: the Idempotency-Key protocol and ``commit(step)``;
- one module per flow: ``card``, ``wallet``, ``capture`` (capture and cancel),
  ``refund``, ``payout``, and the ``resolver`` that ends what was left in flight.
"""
