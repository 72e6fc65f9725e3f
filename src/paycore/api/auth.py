"""API keys: who a request acts for (its tenant) and what it may do (its scopes).

A key reads ``pk_live_<key id>_<secret>``: the id (16 hex chars) names the row in
``api_keys`` (``paycore.storage.keys``), the secret (``secrets.token_urlsafe(32)``) is
shown once, at creation, and only its SHA-256 is stored; a presented secret is compared
with ``hmac.compare_digest``. A key is bound to one tenant and a set of scopes:

    read    GET requests
    write   POST requests (they move money or create objects)
    admin   managing the tenant's own API keys and webhook endpoints (/v1/api_keys,
            /v1/webhook_endpoints; ``paycore keys`` manages every tenant's keys);
            granted with the others, it implies them

``AuthMiddleware`` checks every route but those marked public (``opt={"public": True}``:
/healthz, /readyz, /metrics, /docs and processors' signed notifications). No key, a
malformed, unknown, expired or revoked one: 401 ``unauthorized`` with
``WWW-Authenticate: Bearer``; a valid key without the scope: 403 ``forbidden_scope``
(about the key, it reveals nothing about any object). Handlers then read the caller's
``Principal`` with ``principal_of(request)`` and answer another tenant's object exactly
as a missing one.

Keys live on one shard (a cluster's first). Each node caches a looked-up key for
``CACHE_SECONDS``: a key revoked on another node is refused there within that time; on
the node that revoked it, at once.

With ``auth = "open"`` (``paycore serve --open``, for a developer's machine only) every
request acts for tenant ``default`` with every scope; the app says so loudly at start-up
and in /readyz.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Send
from litestar.types import Scope as ASGIScope

from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import DEFAULT_TENANT, is_valid_tenant
from paycore.logs import bind
from paycore.storage.keys import (
    ApiKeyReads,
    ApiKeyRow,
    CreateApiKey,
    KeyChange,
    RevokeApiKey,
    RotateApiKey,
)

if TYPE_CHECKING:
    from paycore.storage.store import Store

__all__ = [
    "AUTH_MODES",
    "CACHE_SECONDS",
    "KEY_PREFIX",
    "OPEN_PRINCIPAL",
    "ApiKeys",
    "AuthMiddleware",
    "NewKey",
    "Principal",
    "Scope",
    "parse_scopes",
    "principal_of",
    "tenant_of",
]

KEY_PREFIX: Final = "pk_live_"
AUTH_MODES: Final = ("api_keys", "open")
# How long a node trusts a key it looked up (and a miss) before it asks the store again.
CACHE_SECONDS: Final = 5.0
_CACHE_MAX: Final = 10_000
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,64}")
# Longer than any key; a longer header is refused before it is looked at.
_MAX_HEADER: Final = 256
_STATE_KEY: Final = "paycore.principal"
_NS: Final = 1_000_000_000


class Scope(StrEnum):
    """What a key may do (see the module docstring)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


def parse_scopes(text: str) -> frozenset[Scope]:
    """``"read,write"`` -> the scopes; ValueError naming what is not one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in Scope.__members__.values()]
    if bad or not names:
        raise ValueError(
            f"scopes must be a comma-separated list of {', '.join(Scope)}, not {text!r}"
        )
    return frozenset(Scope(n) for n in names)


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts for: a tenant, its key's scopes, the key's id (None: open)."""

    tenant: str
    scopes: frozenset[Scope]
    key_id: str | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


OPEN_PRINCIPAL: Final = Principal(DEFAULT_TENANT, frozenset(Scope))


class NewKey(msgspec.Struct, frozen=True):
    """A key just made: its row and the full key, shown this once."""

    row: ApiKeyRow
    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    """``pk_live_<id>_<secret>`` -> (id, secret); None when it is not that shape."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


def _unauthorized(detail: str) -> RequestError:
    return RequestError(ErrorCode.UNAUTHORIZED, detail)


class ApiKeys:
    """Creates, lists, revokes, rotates and checks the API keys kept in ``store``."""

    def __init__(
        self,
        store: Store,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = store.key_store
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyRow | None]] = {}

    @property
    def reads(self) -> ApiKeyReads:
        return self.home.keys

    # -- management ---------------------------------------------------------------------

    @staticmethod
    def mint(
        tenant: str,
        scopes: frozenset[Scope],
        *,
        expires_in_seconds: int | None = None,
        name: str | None = None,
    ) -> NewKey:
        """A new key's row and token, not stored yet (no I/O): the caller stores the row
        (``CreateApiKey``, or a rotation) and shows the token once."""
        if not is_valid_tenant(tenant):
            raise ValueError(f"tenant {tenant!r}: 1-64 characters: letters, digits, '_', '.', '-'")
        if not scopes:
            raise ValueError("a key needs at least one scope")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = time.time_ns()
        expires = None if expires_in_seconds is None else now + expires_in_seconds * _NS
        row = ApiKeyRow(
            key_id, tenant, ",".join(sorted(scopes)), _hash(secret), now, expires, name=name
        )
        return NewKey(row, f"{KEY_PREFIX}{key_id}_{secret}")

    async def create(
        self,
        tenant: str,
        scopes: frozenset[Scope],
        *,
        expires_in_seconds: int | None = None,
        name: str | None = None,
    ) -> NewKey:
        """A new key for ``tenant`` with ``scopes``; the token is not kept anywhere."""
        new = self.mint(tenant, scopes, expires_in_seconds=expires_in_seconds, name=name)
        await self.home.execute(CreateApiKey(new.row))
        return new

    async def list(self) -> list[ApiKeyRow]:
        return await self.reads.all()

    async def revoke(
        self, key_id: str, *, after_seconds: int = 0, replaced_by: str | None = None
    ) -> ApiKeyRow | None:
        """Revoke a key (at once, or after a grace period); None for an unknown id.
        This node refuses it from then on; the others within ``cache_seconds``."""
        at = time.time_ns() + after_seconds * _NS
        row: ApiKeyRow | None = await self.home.execute(RevokeApiKey(key_id, at, replaced_by))
        self.forget(key_id)
        return row

    def forget(self, key_id: str) -> None:
        """Drop this node's cached copy of a key just changed, so the change holds here
        at once (other nodes: within ``cache_seconds``)."""
        self._cache.pop(key_id, None)

    @classmethod
    def rotation(cls, old: ApiKeyRow, grace_seconds: int) -> tuple[NewKey, RotateApiKey]:
        """The successor of ``old`` (same tenant, scopes and name; no expiry) and the
        command that stores it and revokes ``old`` after ``grace_seconds``, at once."""
        new = cls.mint(old.tenant, parse_scopes(old.scopes), name=old.name)
        now = new.row.created_at
        return new, RotateApiKey(old.id, new.row, now + grace_seconds * _NS, now)

    async def rotate(self, key_id: str, *, grace_seconds: int = 0) -> tuple[NewKey, ApiKeyRow]:
        """A new key for the same tenant and scopes; the old one is revoked after
        ``grace_seconds`` (0: at once). LookupError for an unknown or revoked key."""
        old = await self.reads.get(key_id)
        if old is None:
            raise LookupError(f"no active API key {key_id!r}")
        new, command = self.rotation(old, grace_seconds)
        change: KeyChange = await self.home.execute(command)
        if change.old is None:
            raise LookupError(f"no active API key {key_id!r}")
        self.forget(key_id)
        return new, change.old

    # -- checking -----------------------------------------------------------------------

    async def _row(self, key_id: str) -> ApiKeyRow | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self.reads.get(key_id)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key_id] = (now + self.cache_seconds, row)
        return row

    async def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` header value; 401 for anything else."""
        if header is None:
            raise _unauthorized("this request needs an API key: Authorization: Bearer <key>")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must read 'Bearer <key>'")
        parts = _split(token) if len(token) <= _MAX_HEADER else None
        if parts is None:
            raise _unauthorized("the API key is not valid")
        key_id, secret = parts
        row = await self._row(key_id)
        # compare_digest even for an unknown id, so timing says nothing about which ids exist.
        expected = row.secret_hash if row is not None else "0" * 64
        matches = hmac.compare_digest(_hash(secret).encode(), expected.encode())
        if row is None or not matches or not row.active(time.time_ns()):
            raise _unauthorized("the API key is not valid, expired or revoked")
        return Principal(row.tenant, parse_scopes(row.scopes), row.id)


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The caller of a checked route (set by ``AuthMiddleware``)."""
    principal = request.scope.get("state", {}).get(_STATE_KEY)
    if not isinstance(principal, Principal):  # a route that skipped the check: a bug
        raise RuntimeError(f"no principal for {request.url.path}: is the route public?")
    return principal


def tenant_of(request: Request[Any, Any, Any]) -> str:
    """The caller's tenant."""
    return principal_of(request).tenant


def _needed(method: str, opt: dict[str, Any]) -> Scope:
    wanted = opt.get("scope")
    if isinstance(wanted, Scope):
        return wanted
    return Scope.READ if method in ("GET", "HEAD") else Scope.WRITE


class AuthMiddleware:
    """Checks the API key of every non-public route (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys | None, docs_path: str = "/docs") -> None:
        self.app = app
        self.keys = keys  # None: open mode
        self.docs_path = docs_path  # the OpenAPI schema and its pages are public

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        opt: dict[str, Any] = getattr(handler, "opt", None) or {}
        path = scope["path"]
        if opt.get("public") or path == self.docs_path or path.startswith(self.docs_path + "/"):
            await self.app(scope, receive, send)
            return
        if self.keys is None:
            principal = OPEN_PRINCIPAL
        else:
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            principal = await self.keys.authenticate(header)
            needed = _needed(scope["method"], opt)
            if not principal.allows(needed):
                raise RequestError(
                    ErrorCode.FORBIDDEN_SCOPE,
                    f"this request needs a key with the {needed.value!r} scope",
                )
        scope.setdefault("state", {})[_STATE_KEY] = principal
        # Bound for the rest of the request, the access line included (the metrics
        # middleware, outside this one, unbinds it when the request ends).
        bind(tenant=principal.tenant)
        await self.app(scope, receive, send)
