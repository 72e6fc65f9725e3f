"""The operator console's routes: ``/console`` and its pages, login and logout.

Served without an API key (``opt={"public": True}``: ``AuthMiddleware`` lets them
through) because a browser cannot send one; each page checks the session cookie
instead (``paycore.api.console.sessions``) and sends a browser without one to the
login form. Only ``admin`` keys log in. With ``auth = "open"`` there is no login: the
console acts, like every API request, for tenant ``default`` with every scope, and
every page says so in a banner.

Every page is HTML rendered on the server by Jinja2 with autoescaping, answered with a
Content-Security-Policy that lets the page load nothing but this server's own files and
run no script at all (``script-src 'none'``): the console works without JavaScript. A
POST form carries the session's CSRF token (the login form: a signed one), checked
before anything else; a missing or wrong token is a 403.
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from markupsafe import Markup

from paycore.api.auth import ApiKeys, Scope
from paycore.api.console import reads
from paycore.api.console.audit_pages import audit_routes
from paycore.api.console.audit_runs import Auditor, AuditRuns
from paycore.api.console.chart import balance_svg
from paycore.api.console.frame import (
    CONSOLE_PATH,
    CSP,
    HEADERS,
    LOGIN_COOKIE,
    NS,
    PAGE_SIZE,
    PUBLIC,
    SESSION_COOKIE,
    STATIC_FILES,
    Console,
    console_templates,
    forbidden,
    form_field,
    home,
    secure_request,
    to_login,
    transfer_rows,
)
from paycore.api.console.money_pages import money_routes
from paycore.api.console.ops_pages import bound_seconds, ops_routes
from paycore.api.console.owners import made_by
from paycore.api.console.sessions import Sessions
from paycore.api.console.traffic_rows import traffic_rows
from paycore.api.payment_schemas import payment_out
from paycore.api.routes.ops import WorkerStatus
from paycore.api.tenancy import Namespace
from paycore.api.traffic import RecentTraffic
from paycore.config import Settings
from paycore.errors import RequestError
from paycore.ledger.model import SYSTEM_TENANT, is_valid_id
from paycore.payments.listing import refunds_of
from paycore.payments.service import PaymentService
from paycore.storage.store import Store

__all__ = ["CONSOLE_PATH", "CSP", "SESSION_COOKIE", "console_routes", "console_templates"]

_STUCK_DEFAULT: Final = 60
_STUCK_MAX: Final = 30 * 86400


def console_routes(
    store: Store,
    payments: PaymentService,
    settings: Settings,
    api_keys: ApiKeys,
    *,
    workers: WorkerStatus | None = None,
    sessions: Sessions | None = None,
    traffic: RecentTraffic | None = None,
    auditor: Auditor | None = None,
) -> list[HTTPRouteHandler]:
    """The console's handlers, bound to the app's store, payment service and keys
    (``traffic``: this node's last minutes, shown on the overview when given;
    ``auditor``: what the audit page runs, None: it offers none)."""
    live = sessions if sessions is not None else Sessions()
    c = Console(
        store, payments, settings, api_keys, workers=workers, sessions=live, traffic=traffic
    )
    runs = None
    if auditor is not None:
        runs = AuditRuns(store, auditor, stuck_seconds=settings.saga_stuck_seconds)
    return [
        *_session_routes(c),
        *_overview_routes(c),
        *_ledger_routes(c),
        *money_routes(c),
        *ops_routes(c),
        *audit_routes(c, runs),
    ]


def _session_routes(c: Console) -> list[HTTPRouteHandler]:
    """Login, logout, the stylesheet."""

    @get(f"{CONSOLE_PATH}/login", opt=PUBLIC, include_in_schema=False)
    async def login_page(request: Request[Any, Any, Any]) -> Response[Any]:
        if c.open_mode or await c.caller(request) is not None:
            return home()
        return c.login_form(request, None, 200)

    @post(f"{CONSOLE_PATH}/login", opt=PUBLIC, include_in_schema=False, status_code=303)
    async def login(request: Request[Any, Any, Any]) -> Response[Any]:
        form = await request.form()
        if not c.login_tokens.check(request.cookies.get(LOGIN_COOKIE), form_field(form, "csrf")):
            return forbidden(request)
        if c.open_mode:
            return home()
        key = (form_field(form, "api_key") or "").strip()
        try:
            principal = await c.api_keys.authenticate(f"Bearer {key}")
        except RequestError:
            return c.login_form(request, "That API key is not valid, expired or revoked.", 401)
        if Scope.ADMIN not in principal.scopes:
            return c.login_form(request, "The console needs a key with the admin scope.", 403)
        session = c.live.create(principal)
        cookie = Cookie(
            key=SESSION_COOKIE, value=session.id, path=CONSOLE_PATH, httponly=True,
            samesite="strict", secure=secure_request(request),
        )  # fmt: skip
        gone = Cookie(key=LOGIN_COOKIE, value="", path=CONSOLE_PATH, max_age=0)
        return Redirect(CONSOLE_PATH, status_code=303, headers=HEADERS, cookies=[cookie, gone])

    @post(f"{CONSOLE_PATH}/logout", opt=PUBLIC, include_in_schema=False, status_code=303)
    async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
        who = await c.caller(request)
        if who is None or who[1] is None:
            return home() if c.open_mode else to_login()
        form = await request.form()
        session = who[1]
        if not session.csrf_matches(form_field(form, "csrf")):
            return forbidden(request)
        c.live.end(session.id)
        gone = Cookie(key=SESSION_COOKIE, value="", path=CONSOLE_PATH, max_age=0)
        return Redirect(f"{CONSOLE_PATH}/login", status_code=303, headers=HEADERS, cookies=[gone])

    @get(f"{CONSOLE_PATH}/static/{{name:str}}", opt=PUBLIC, include_in_schema=False)
    async def static(name: FromPath[str]) -> Response[bytes]:
        """The console's own stylesheet (from the package: no CDN)."""
        media = STATIC_FILES.get(name)
        if media is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        body = files("paycore.api.console").joinpath("static", name).read_bytes()
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type=media, headers=headers)

    return [login_page, login, logout, static]


def _overview_routes(c: Console) -> list[HTTPRouteHandler]:
    """The overview, payments and stuck payments."""

    @get(CONSOLE_PATH, opt=PUBLIC, include_in_schema=False)
    async def overview(request: Request[Any, Any, Any]) -> Response[Any]:
        """Money per currency, the shards, the processors' breakers, the jobs."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        totals, truncated = await reads.currency_totals(c.store, who[0].tenant)
        status = c.workers.status() if c.workers is not None else None
        return c.page(
            request, "overview.html", who,
            totals=totals, truncated=truncated, scanned=reads.ACCOUNTS_SCANNED,
            shards=await reads.shard_health(c.store),
            breakers=reads.breakers(c.payments.connectors),
            jobs=None if status is None else status.get("jobs", []),
            lock_backend_down=bool(status and status.get("lock_backend_down")),
            traffic=None if c.traffic is None else traffic_rows(c.traffic, time.time()),
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/payments/{{payment_id:str}}", opt=PUBLIC, include_in_schema=False)
    async def payment(request: Request[Any, Any, Any], payment_id: FromPath[str]) -> Response[Any]:
        """A payment, its attempts as a timeline, its ledger transfers."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)
        view = await c.owned("payment", payment_id, ns.tenant, c.payments.get_payment)
        if view is None:
            return c.missing(request, who, "payment", payment_id)
        transfers = await reads.payment_transfers(c.store, view)
        return c.page(
            request, "payment.html", who,
            p=payment_out(view, ns, await refunds_of(c.payments, view)),
            transfers=transfer_rows(ns, transfers),
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/stuck", opt=PUBLIC, include_in_schema=False)
    async def stuck(
        request: Request[Any, Any, Any], older_than: FromQuery[str] = ""
    ) -> Response[Any]:
        """Payments still processing past a bound (default 60 s)."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        seconds = bound_seconds(older_than, _STUCK_DEFAULT, _STUCK_MAX)
        found = await reads.stuck_payments(c.payments, who[0].tenant, seconds)
        ns = Namespace(who[0].tenant)
        now = time.time_ns()
        rows = [
            (view.payment, ns.out(view.payment.merchant_account_id),
             (now - view.payment.created_at) // NS)
            for view in found
        ]  # fmt: skip
        return c.page(request, "stuck.html", who, rows=rows, older_than=seconds)

    return [overview, payment, stuck]


def _ledger_routes(c: Console) -> list[HTTPRouteHandler]:
    """Account search, accounts, transfers."""

    @get(f"{CONSOLE_PATH}/accounts", opt=PUBLIC, include_in_schema=False)
    async def accounts(request: Request[Any, Any, Any], q: FromQuery[str] = "") -> Response[Any]:
        """Accounts by id prefix."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)
        q = q.strip()
        error = None
        found: list[Any] = []
        truncated = False
        if q and (len(q) > 64 or not is_valid_id(q)):
            error = "An id is 1-64 characters: letters, digits, '_', '.', ':', '-'."
        else:
            found, truncated = await reads.search_accounts(c.store, ns, q)
        rows = [(ns.out(a.id), a, a.tenant == SYSTEM_TENANT) for a in found]
        return c.page(
            request, "accounts.html", who, q=q, rows=rows, error=error, truncated=truncated,
            scanned=reads.ACCOUNTS_SCANNED,
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/accounts/{{account_id:str}}", opt=PUBLIC, include_in_schema=False)
    async def account(
        request: Request[Any, Any, Any],
        account_id: FromPath[str],
        cursor: FromQuery[str | None] = None,
    ) -> Response[Any]:
        """An account: balances, balance chart, its transfers newest first."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)
        found = await reads.readable_account(c.store, ns, account_id)
        if found is None:
            return c.missing(request, who, "account", account_id)
        after = int(cursor) if cursor and cursor.isdigit() and len(cursor) <= 19 else None
        listed = await c.store.account_transfers(
            found.id, limit=PAGE_SIZE, cursor=after, descending=True
        )
        views = listed.data
        system = found.tenant == SYSTEM_TENANT
        if system:  # paycore's account: only the transfers touching this tenant's
            views = await reads.visible_transfers(c.store, ns, views)
        chart = ""
        if found.flags.history:
            history = await c.store.balance_history(found.id, limit=500)
            chart = balance_svg(
                [(r.timestamp, r.credits_posted - r.debits_posted) for r in history]
            )
        return c.page(
            request, "account.html", who,
            account=found, client_id=ns.out(found.id), system=system,
            transfers=transfer_rows(ns, views),
            next_cursor=listed.next_cursor, chart=Markup(chart),  # noqa: S704 - numbers only
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/transfers/{{transfer_id:str}}", opt=PUBLIC, include_in_schema=False)
    async def transfer(
        request: Request[Any, Any, Any], transfer_id: FromPath[str]
    ) -> Response[Any]:
        """A transfer, its accounts and, for a payment's, the payment."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        ns = Namespace(who[0].tenant)
        view = await reads.readable_transfer(c.store, ns, transfer_id)
        if view is None:
            return c.missing(request, who, "transfer", transfer_id)
        t = view.transfer
        owner_kind, owner_id = made_by(t.id)
        return c.page(
            request, "transfer.html", who,
            view=view, t=t, client_id=ns.out(t.id), debit=ns.out(t.debit_account_id),
            credit=ns.out(t.credit_account_id), pending=ns.optional_out(t.pending_id),
            resolved_by=ns.optional_out(view.resolved_by), owner_kind=owner_kind,
            owner_id=owner_id,
        )  # fmt: skip

    return [accounts, account, transfer]
