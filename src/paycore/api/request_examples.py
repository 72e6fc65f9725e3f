"""An example request body for every operation that takes one: one declarative table.

``REQUEST_EXAMPLES`` maps an operation (``"POST /v1/transfers"``, as in
``paycore.api.problem_codes``) to its named examples, each a summary and a body. The
OpenAPI document (``paycore.api.openapi``) shows them under the operation's request body,
where Swagger UI offers them in "Try it out" and a reader of the document sees a
realistic call. Money is integer minor units.

Tests (``tests/api/test_request_examples.py``) hold the table to the document: its
operations are exactly those with a request body, and each example decodes, strictly,
into the body type the operation's handler decodes. The ids are those of one story,
which a test also sends to a fresh ledger, where every account, transfer, batch, hold,
payment, refund and payout example is accepted: accounts ``bank``, ``alice`` and ``shop``
in USD, a hold ``order-7`` captured in part, a card payment captured and refunded, a
payout from ``alice``'s wallet.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["REQUEST_EXAMPLES", "Example"]

Example = tuple[str, dict[str, Any]]
"""A summary and a request body."""

_CARD: Final = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
_REPORT: Final = (
    "record,batch_id,settlement_date,payout_date,type,reference,processor_id,currency,"
    "count,gross,fee,net\n"
    "line,sim-a-20261207,2026-12-07,2026-12-08,capture,pay_9f2411c3b5a04e0c8d7e6f10.a1,"
    "sim-a_au_00000001,USD,,10.00,0.39,9.61\n"
    "total,sim-a-20261207,2026-12-07,2026-12-08,,,,USD,1,10.00,0.39,9.61\n"
)

REQUEST_EXAMPLES: Final[dict[str, dict[str, Example]]] = {
    "POST /v1/accounts": {
        "wallet": (
            "A customer wallet that never goes below zero, with its balance history",
            {
                "id": "alice",
                "currency": "USD",
                "flags": {"no_overdraft": True, "history": True},
                "metadata": {"customer": "cus_481"},
            },
        ),
        "credit_line": (
            "An account that may owe up to 500.00",
            {"id": "bob", "currency": "USD", "flags": {"credit_limit": 50000}},
        ),
        "generated_id": ("A settlement account with a generated id", {"currency": "USD"}),
    },
    "POST /v1/accounts/{account_id}/close": {
        "empty": ("Close an account whose balance is zero", {}),
        "sweep": (
            "Move what is left to another account, then close",
            {"transfer_balance_to": "bank"},
        ),
    },
    "POST /v1/transfers": {
        "posted": (
            "Move 100.00 from bank to alice",
            {
                "id": "topup-1",
                "debit_account_id": "bank",
                "credit_account_id": "alice",
                "amount": 10000,
                "currency": "USD",
            },
        ),
        "hold": (
            "Hold 25.00 of alice's for an hour (post or void it later)",
            {
                "id": "order-7",
                "debit_account_id": "alice",
                "credit_account_id": "shop",
                "amount": 2500,
                "currency": "USD",
                "pending": True,
                "timeout_seconds": 3600,
                "metadata": {"order": "7"},
            },
        ),
        "balancing": (
            "Move at most 50.00: whatever alice has up to it",
            {
                "id": "sweep-1",
                "debit_account_id": "alice",
                "credit_account_id": "bank",
                "amount": 5000,
                "currency": "USD",
                "balancing": True,
            },
        ),
    },
    "POST /v1/transfers/batch": {
        "linked": (
            "Two transfers that succeed or fail as one (linked), and one on its own",
            {
                "transfers": [
                    {
                        "id": "fee-1",
                        "debit_account_id": "alice",
                        "credit_account_id": "shop",
                        "amount": 1000,
                        "currency": "USD",
                        "linked": True,
                    },
                    {
                        "id": "fee-2",
                        "debit_account_id": "shop",
                        "credit_account_id": "bank",
                        "amount": 30,
                        "currency": "USD",
                    },
                    {
                        "id": "topup-2",
                        "debit_account_id": "bank",
                        "credit_account_id": "alice",
                        "amount": 2000,
                        "currency": "USD",
                    },
                ]
            },
        ),
        "post_pending": (
            "Capture a hold in full inside a batch",
            {"transfers": [{"id": "order-8-post", "pending_id": "order-8", "post_pending": True}]},
        ),
    },
    "POST /v1/transfers/{transfer_id}/post": {
        "partial": ("Capture 20.00 of the hold; the rest is released", {"amount": 2000}),
        "full": ("Capture the whole hold", {}),
    },
    "POST /v1/transfers/{transfer_id}/void": {
        "void": ("Release the hold", {}),
        "with_metadata": ("Release it, noting why", {"metadata": {"reason": "order canceled"}}),
    },
    "POST /v1/payments": {
        "card_manual": (
            "Authorize 19.99 on a card, to capture later",
            {
                "amount": 1999,
                "currency": "USD",
                "merchant_account_id": "shop",
                "capture": "manual",
                "source": {"card": _CARD},
            },
        ),
        "wallet": (
            "Pay 5.00 from a wallet at once",
            {
                "amount": 500,
                "currency": "USD",
                "merchant_account_id": "shop",
                "source": {"wallet_account_id": "alice"},
            },
        ),
    },
    "POST /v1/payments/{payment_id}/capture": {
        "partial": (
            "Capture 15.00 of the authorization and release the rest",
            {"amount": 1500, "final_capture": True},
        ),
        "full": ("Capture all that is authorized", {}),
    },
    "POST /v1/payments/{payment_id}/cancel": {"cancel": ("Cancel the authorization", {})},
    "POST /v1/refunds": {
        "partial": (
            "Refund 5.00 of a payment",
            {"payment_id": "pay_9f2411c3b5a04e0c8d7e6f10", "amount": 500},
        ),
        "all": (
            "Refund all that is left to refund",
            {"payment_id": "pay_9f2411c3b5a04e0c8d7e6f10"},
        ),
    },
    "POST /v1/payouts": {
        "payout": (
            "Pay 40.00 out of alice's wallet to a bank account",
            {
                "wallet_account_id": "alice",
                "amount": 4000,
                "currency": "USD",
                "destination": "DE89370400440532013000",
            },
        ),
    },
    "POST /v1/api_keys": {
        "checkout": (
            "A read and write key for a service, expiring in 90 days",
            {"scopes": ["read", "write"], "name": "checkout", "expires_in_seconds": 7776000},
        ),
    },
    "POST /v1/api_keys/{key_id}/rotate": {
        "grace": ("A new key; the old one keeps working for an hour", {"grace_seconds": 3600}),
    },
    "POST /v1/webhook_endpoints": {
        "payments": (
            "Every payment and refund event, sent to your HTTPS endpoint",
            {
                "url": "https://example.com/paycore/hooks",
                "events": ["payment.*", "refund.*"],
                "description": "order service",
            },
        ),
    },
    "POST /v1/webhook_endpoints/{endpoint_id}/rotate_secret": {
        "grace": (
            "A new secret; events are signed with both for a day",
            {"grace_seconds": 86400},
        ),
    },
    "POST /v1/webhook_endpoints/{endpoint_id}/test": {"test": ("Send a test event", {})},
    "POST /v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver": {
        "redeliver": ("Send the event again", {}),
    },
    "POST /v1/fx/quotes": {
        "sell": (
            "What 100.00 USD buys in EUR",
            {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount": 10000},
        ),
        "buy": (
            "What 50.00 EUR costs in USD",
            {"sell_currency": "USD", "buy_currency": "EUR", "buy_amount": 5000},
        ),
    },
    "POST /v1/fx/conversions": {
        "convert": (
            "Convert at a quote, from alice's USD wallet to her EUR one",
            {
                "quote_id": "fxq_3f0c6a1d9b2e4c7a8d5e6f70",
                "debit_account_id": "alice",
                "credit_account_id": "alice-eur",
            },
        ),
    },
    "POST /v1/fx/conversions/{conversion_id}/capture": {
        "partial": ("Capture 60.00 of a held conversion", {"sell_amount": 6000}),
        "full": ("Capture all of it", {}),
    },
    "POST /v1/fx/conversions/{conversion_id}/void": {"void": ("Release a held conversion", {})},
    "POST /v1/reconciliation/reports": {
        "report": (
            "Import a processor's settlement report (CSV text)",
            {"processor": "sim-a", "report": _REPORT},
        ),
    },
    "POST /v1/reconciliation/exceptions/{exception_id}/resolve": {
        "resolve": (
            "Close an exception with what was found",
            {"note": "refunded by hand on 2026-12-08, ticket OPS-1432"},
        ),
    },
    "POST /v1/processor_events/{processor}": {
        "captured": (
            "A processor's notice that an authorization was captured (signed)",
            {
                "id": "ntf_123",
                "type": "authorization.captured",
                "reference": "pay_9f2411c3b5a04e0c8d7e6f10.a1",
            },
        ),
    },
}
"""Named example bodies of each operation that takes a body, by ``"METHOD /path"``."""
