"""``X-Request-Id`` on every answer: the caller's own, when it sent a usable one, else a
new one (``req_`` and 24 hex digits), so a client, a log line and a support ticket can
name the same request. Set by a Litestar ``before_send`` hook, which sees every answer
the app sends: routed ones, 404s and 405s of unknown paths, and error pages alike."""

from __future__ import annotations

import re
import secrets
from typing import Final

from litestar.types import Message, Scope

__all__ = ["HEADER", "add_request_id", "request_id_of"]

HEADER: Final = "x-request-id"
_HEADER_BYTES: Final = HEADER.encode()
# What a caller's id may be to be echoed: short, and nothing a log or a header could
# be confused by (no spaces, quotes, control characters).
_USABLE: Final = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_SCOPE_KEY: Final = "paycore.request_id"


def request_id_of(scope: Scope) -> str:
    """The request's id: the one the caller sent, if usable, else a new one (once)."""
    state = scope.setdefault("state", {})
    known: str | None = state.get(_SCOPE_KEY)
    if known is None:
        known = next(
            (
                value.decode()
                for name, value in scope.get("headers", ())
                if name == _HEADER_BYTES and _USABLE.fullmatch(value)
            ),
            None,
        ) or "req_" + secrets.token_hex(12)
        state[_SCOPE_KEY] = known
    return known


async def add_request_id(message: Message, scope: Scope) -> None:
    """Put ``X-Request-Id`` in the answer's head."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    if any(name.lower() == _HEADER_BYTES for name, _ in headers):
        return
    headers.append((_HEADER_BYTES, request_id_of(scope).encode()))
    message["headers"] = headers
