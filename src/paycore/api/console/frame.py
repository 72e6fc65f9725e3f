"""What every console page shares: its constants and headers, the templates, who the
browser is (``Console.caller``), the page renderer and the redirects (see ``pages``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import Request
from litestar.datastructures import Cookie
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from paycore.api.auth import OPEN_PRINCIPAL, ApiKeys, Principal, Scope, parse_scopes
from paycore.api.console.owners import made_by
from paycore.api.console.sessions import LoginTokens, Session, Sessions
from paycore.api.routes.ops import OPEN_AUTH_WARNING, WorkerStatus
from paycore.api.schemas import rfc3339
from paycore.api.tenancy import Namespace
from paycore.api.traffic import RecentTraffic
from paycore.config import Settings
from paycore.errors import RequestError
from paycore.ledger.model import TransferView
from paycore.payments.service import PaymentService
from paycore.storage.store import Store

__all__ = [
    "CONSOLE_PATH",
    "CSP",
    "HEADERS",
    "LOGIN_COOKIE",
    "NS",
    "PAGE_SIZE",
    "PUBLIC",
    "SESSION_COOKIE",
    "STATIC_FILES",
    "Console",
    "console_templates",
    "forbidden",
    "form_field",
    "home",
    "secure_request",
    "to_login",
    "transfer_rows",
]

V = TypeVar("V")

CONSOLE_PATH: Final = "/console"
SESSION_COOKIE: Final = "paycore_console"
LOGIN_COOKIE: Final = "paycore_console_login"
CSP: Final = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PUBLIC: Final = {"public": True}  # no API key: the session cookie is checked instead
STATIC_FILES: Final = {"console.css": "text/css; charset=utf-8"}
PAGE_SIZE: Final = 25
NS: Final = 1_000_000_000


def _timestamp(ns: int | None) -> str:
    return "" if ns is None else rfc3339(ns)


def _amount(value: int) -> str:
    return f"{value:,}"


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """The console's Jinja2 templates, autoescaped, an undefined name an error."""
    env = Environment(
        loader=PackageLoader("paycore.api.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    env.filters["ts"] = _timestamp
    env.filters["amount"] = _amount
    env.filters["seg"] = lambda text: quote(str(text), safe="")
    env.globals["made_by"] = made_by
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def secure_request(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


class Console:
    """What every handler shares: the services, the sessions, the page renderer."""

    def __init__(
        self,
        store: Store,
        payments: PaymentService,
        settings: Settings,
        api_keys: ApiKeys,
        *,
        workers: WorkerStatus | None,
        sessions: Sessions,
        traffic: RecentTraffic | None = None,
    ) -> None:
        self.store = store
        self.payments = payments
        self.api_keys = api_keys
        self.workers = workers
        self.traffic = traffic
        self.open_mode = settings.auth == "open"
        self.live = sessions
        self.login_tokens = LoginTokens()

    async def caller(
        self, request: Request[Any, Any, Any]
    ) -> tuple[Principal, Session | None] | None:
        """Who the browser is: (principal, session), None when it must log in."""
        if self.open_mode:
            return OPEN_PRINCIPAL, None
        session = self.live.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return None
        key_id = session.principal.key_id
        row = None if key_id is None else await self.api_keys.reads.get(key_id)
        if (
            row is None
            or not row.active(time.time_ns())
            or (Scope.ADMIN not in parse_scopes(row.scopes))
        ):
            self.live.end(session.id)  # the key was revoked, expired or lost its admin scope
            return None
        return session.principal, session

    def page(
        self,
        request: Request[Any, Any, Any],
        name: str,
        who: tuple[Principal, Session | None],
        *,
        status: int = 200,
        cookies: list[Cookie] | None = None,
        **context: Any,
    ) -> Template:
        principal, session = who
        return Template(
            template_name=name,
            context={
                "tenant": principal.tenant,
                "warning": OPEN_AUTH_WARNING if self.open_mode else None,
                "csrf": None if session is None else session.csrf,
                "path": request.url.path,
                **context,
            },
            status_code=status,
            headers=HEADERS,
            cookies=cookies or [],
        )

    async def owned(
        self, kind: str, ident: str, tenant: str, read: Callable[[str], Awaitable[V]]
    ) -> V | None:
        """``read(ident)`` when ``tenant`` owns the ``kind`` (payment, refund, payout) of
        that id; None when it is missing or another tenant's (one 404 for both)."""
        try:
            await self.payments.check_owner(kind, ident, tenant)
            return await read(ident)
        except RequestError:
            return None

    def missing(self, request: Request[Any, Any, Any], who: Any, what: str, ident: str) -> Template:
        return self.page(request, "missing.html", who, status=404, what=what, ident=ident)

    def login_form(
        self, request: Request[Any, Any, Any], error: str | None, status: int
    ) -> Template:
        nonce, token = self.login_tokens.new()
        cookie = Cookie(
            key=LOGIN_COOKIE, value=nonce, path=CONSOLE_PATH, max_age=3600, httponly=True,
            samesite="strict", secure=secure_request(request),
        )  # fmt: skip
        return Template(
            template_name="login.html",
            context={"login_csrf": token, "error": error, "warning": None, "tenant": None,
                     "csrf": None, "path": request.url.path},
            status_code=status,
            headers=HEADERS,
            cookies=[cookie],
        )  # fmt: skip


def to_login() -> Redirect:
    return Redirect(f"{CONSOLE_PATH}/login", status_code=303, headers=HEADERS)


def home() -> Redirect:
    return Redirect(CONSOLE_PATH, status_code=303, headers=HEADERS)


def form_field(form: Any, name: str) -> str | None:
    """A form field's text; None when absent or not text (a file part)."""
    value = form.get(name)
    return value if isinstance(value, str) else None


def forbidden(request: Request[Any, Any, Any]) -> Template:
    return Template(
        template_name="forbidden.html",
        context={"warning": None, "tenant": None, "csrf": None, "path": request.url.path},
        status_code=403,
        headers=HEADERS,
    )


def transfer_rows(
    ns: Namespace, views: list[TransferView]
) -> list[tuple[str, TransferView, str, str]]:
    """What ``_transfers.html`` lists: (client id, view, debit, credit) as ``ns`` names them."""
    return [
        (ns.out(v.transfer.id), v, ns.out(v.transfer.debit_account_id),
         ns.out(v.transfer.credit_account_id))
        for v in views
    ]  # fmt: skip
