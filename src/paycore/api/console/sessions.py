"""The console's sessions: who is logged in, kept on this node, never in the cookie.

A login with an ``admin`` API key makes a ``Session``: a random id
(``secrets.token_urlsafe(32)``) that the browser keeps in an HttpOnly, SameSite=Strict
cookie (Secure over https), the key's ``Principal`` and a random CSRF token that every
POST form of the session carries and that is compared with ``hmac.compare_digest``. The
key itself is never stored: the session keeps its id only, and ``pages`` checks on every
request that the key is still active (a revoked key ends its sessions at once).

Sessions expire after ``IDLE_SECONDS`` without a request and ``MAX_SECONDS`` after the
login, whatever happens; at most ``MAX_SESSIONS`` live at once (the oldest is dropped to
make room). They live in this process: behind a load balancer, the console needs sticky
sessions (or one node), and a restart logs everyone out.

The login form itself has no session yet: its CSRF token is an HMAC, under a secret of
this process, of a random nonce kept in a short-lived cookie (a double-submit token that
cannot be forged without the secret), so an anonymous visitor fills no server memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from paycore.api.auth import Principal

__all__ = ["IDLE_SECONDS", "MAX_SECONDS", "MAX_SESSIONS", "LoginTokens", "Session", "Sessions"]

IDLE_SECONDS: Final = 30 * 60
MAX_SECONDS: Final = 12 * 3600
MAX_SESSIONS: Final = 1000


@dataclass(slots=True)
class Session:
    """One logged-in browser: its principal and the CSRF token of its forms."""

    id: str
    principal: Principal
    csrf: str
    created: float
    seen: float = field(default=0.0)

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """The live sessions of this node, bounded in number and in time."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        # By the SHA-256 of the id: a timing side channel on the map says nothing of ids.
        self._by_hash: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_hash)

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create(self, principal: Principal) -> Session:
        now = self._clock()
        self._expire(now)
        while len(self._by_hash) >= self.max_sessions:
            self._by_hash.popitem(last=False)  # the oldest login makes room
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32), now, now)
        self._by_hash[self._key(session.id)] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's id (its idle clock restarted); None otherwise."""
        if not session_id or len(session_id) > 128:
            return None
        key = self._key(session_id)
        session = self._by_hash.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self.idle_seconds or now - session.created > self.max_seconds:
            del self._by_hash[key]
            return None
        session.seen = now
        return session

    def end(self, session_id: str) -> None:
        self._by_hash.pop(self._key(session_id), None)

    def _expire(self, now: float) -> None:
        dead = [
            k
            for k, s in self._by_hash.items()
            if now - s.seen > self.idle_seconds or now - s.created > self.max_seconds
        ]
        for k in dead:
            del self._by_hash[k]


class LoginTokens:
    """CSRF tokens of the login form: ``HMAC(secret, nonce)``, the nonce in a cookie."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def new(self) -> tuple[str, str]:
        """(nonce for the cookie, token for the form)."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._sign(nonce)

    def check(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or len(nonce) > 64 or len(token) > 128:
            return False
        return hmac.compare_digest(self._sign(nonce).encode(), token.encode())

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()
