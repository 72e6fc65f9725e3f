"""The console's refund and payout pages: status, amounts, the processor attempts as a
timeline, the ledger transfers they made, and links to the parent payment or wallet.

Tenant boundaries as in the API (``PaymentService.check_owner``): a refund is its
payment's merchant's tenant's, a payout its wallet's; another tenant's is the same 404
as a missing one.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from paycore.api.console import reads
from paycore.api.console.frame import CONSOLE_PATH, PUBLIC, Console, to_login, transfer_rows
from paycore.api.payment_schemas import payout_out, refund_out
from paycore.api.tenancy import Namespace
from paycore.payments.service import PaymentView, RefundView

__all__ = ["money_routes"]


def money_routes(c: Console) -> list[HTTPRouteHandler]:
    """A refund's page and a payout's page."""

    @get(f"{CONSOLE_PATH}/refunds/{{refund_id:str}}", opt=PUBLIC, include_in_schema=False)
    async def refund(request: Request[Any, Any, Any], refund_id: FromPath[str]) -> Response[Any]:
        """A refund, its attempts, its ledger transfers (on its payment's merchant account)."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)

        async def read(ident: str) -> tuple[RefundView, PaymentView]:
            view = await c.payments.get_refund(ident)
            return view, await c.payments.get_payment(view.refund.payment_id)

        found = await c.owned("refund", refund_id, ns.tenant, read)
        if found is None:
            return c.missing(request, who, "refund", refund_id)
        view, parent = found
        merchant = parent.payment.merchant_account_id
        r = view.refund
        transfers = await reads.owned_transfers(c.store, r.id, merchant, r.created_at)
        return c.page(
            request, "refund.html", who,
            r=refund_out(view, ns), merchant=ns.out(merchant),
            transfers=transfer_rows(ns, transfers),
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/payouts/{{payout_id:str}}", opt=PUBLIC, include_in_schema=False)
    async def payout(request: Request[Any, Any, Any], payout_id: FromPath[str]) -> Response[Any]:
        """A payout, its attempts, its ledger transfers (on its wallet account)."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)
        view = await c.owned("payout", payout_id, ns.tenant, c.payments.get_payout)
        if view is None:
            return c.missing(request, who, "payout", payout_id)
        p = view.payout
        transfers = await reads.owned_transfers(c.store, p.id, p.wallet_account_id, p.created_at)
        return c.page(
            request,
            "payout.html",
            who,
            p=payout_out(view, ns),
            transfers=transfer_rows(ns, transfers),
        )

    return [refund, payout]
