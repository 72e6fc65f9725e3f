"""The console's audit page: the last audit this node ran, and a form to run one now
(``audit_runs``: bounded, one at a time). The POST carries the session's CSRF token;
with ``auth = "open"`` there is no session, so the form carries a signed token tied
to a cookie instead (as the login form's), and a cross-site form cannot start one.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.handlers import HTTPRouteHandler

from paycore.api.console.audit_runs import AuditRuns
from paycore.api.console.frame import (
    CONSOLE_PATH,
    LOGIN_COOKIE,
    PUBLIC,
    Console,
    forbidden,
    form_field,
    secure_request,
    to_login,
)

__all__ = ["audit_routes"]

# How long the POST waits for the audit before showing the page (which then refreshes
# itself until the audit is done).
_WAIT_SECONDS: Final = 5.0


def audit_routes(c: Console, runs: AuditRuns | None) -> list[HTTPRouteHandler]:
    """The audit page and its form (``runs`` None: this app has no auditor)."""

    def render(request: Request[Any, Any, Any], who: Any, notice: str | None) -> Response[Any]:
        cookies: list[Cookie] = []
        token = who[1].csrf if who[1] is not None else None
        if token is None:  # open mode: a signed token for this browser's cookie
            nonce, token = c.login_tokens.new()
            cookies.append(
                Cookie(key=LOGIN_COOKIE, value=nonce, path=CONSOLE_PATH, max_age=3600,
                       httponly=True, samesite="strict", secure=secure_request(request))
            )  # fmt: skip
        return c.page(
            request, "audit.html", who, cookies=cookies, form_csrf=token, runs=runs,
            last=None if runs is None else runs.last, notice=notice,
        )  # fmt: skip

    @get(f"{CONSOLE_PATH}/audit", opt=PUBLIC, include_in_schema=False)
    async def audit_page(request: Request[Any, Any, Any]) -> Response[Any]:
        """The last audit's outcome per shard and per kind; the form to run one."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        return render(request, who, None)

    @post(f"{CONSOLE_PATH}/audit", opt=PUBLIC, include_in_schema=False, status_code=200)
    async def run_audit(request: Request[Any, Any, Any]) -> Response[Any]:
        """Start an audit and wait for it a few seconds."""
        who = await c.caller(request)
        if who is None:
            return to_login()
        form = await request.form()
        token = form_field(form, "csrf")
        session = who[1]
        if session is not None:
            allowed = session.csrf_matches(token)
        else:
            allowed = c.login_tokens.check(request.cookies.get(LOGIN_COOKIE), token)
        if not allowed:
            return forbidden(request)
        if runs is None:
            return render(request, who, "This server runs no audit: run `paycore audit`.")
        refused = runs.start()
        if refused is None:
            await runs.wait(_WAIT_SECONDS)
        return render(request, who, refused)

    return [audit_page, run_audit]
