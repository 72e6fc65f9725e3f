"""Every write goes through ``WriteExecutor``, under the request's Idempotency-Key if any.

With a key, the store looks the key up and keeps the rendered answer in the same
transaction as the effect, so a retry gets the first answer (errors included) and
never acts twice. The fingerprint is the method, the path and the *decoded* body
re-encoded with sorted keys and defaults filled in: a client that reorders keys
on retry is still the same request; one that changes a value is not.

Bodies that fail validation are refused before the key is looked at, and nothing
is stored for them (Stripe does the same): the same bad body gets the same 422
again, and a corrected body may reuse the key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec
from litestar import Request, Response

from paycore.api.schemas import canonical_json
from paycore.errors import ErrorCode, IdempotencyError, RequestError
from paycore.storage.base import Command, Idempotency, Store, StoredResponse

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "KeysInFlight",
    "Render",
    "WriteExecutor",
    "fingerprint",
    "stored_to_response",
]

IDEMPOTENCY_HEADER: Final = "idempotency-key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
# Until API keys land (a later issue) every caller is the same tenant; keys are
# stored tenant-scoped already so that adding tenants needs no migration.
_TENANT: Final = "default"
_KEY_SHAPE: Final = re.compile(r"[\x20-\x7e]{1,255}")

Render = Callable[[Any], StoredResponse]
"""Turns a command's result into the exact HTTP answer; pure, runs in the store's writer."""


class KeysInFlight:
    """Keys whose first request is still running in this process.

    A second request with the same key must not wait for, or race, the first: it
    gets 409 ``idempotency_key_in_use`` and may retry. (Across API nodes the store
    serialises them; a cluster-wide guard comes with the lock service.)
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self._keys)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if key in self._keys:
            raise IdempotencyError(
                ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                "a request with this Idempotency-Key is still running; retry later",
            )
        self._keys.add(key)
        try:
            yield
        finally:
            self._keys.discard(key)


def fingerprint(method: str, path: str, body: msgspec.Struct) -> str:
    """What makes two requests under one key "the same request"."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(canonical_json(body))
    return digest.hexdigest()


def stored_to_response(stored: StoredResponse, *, replayed: bool = False) -> Response[bytes]:
    return Response(
        stored.body,
        status_code=stored.status,
        media_type=stored.content_type,
        headers={REPLAYED_HEADER: "true"} if replayed else None,
    )


class WriteExecutor:
    """Runs write commands against the store and answers them, idempotently when asked."""

    def __init__(self, store: Store, *, retention_seconds: int) -> None:
        self.store = store
        self.retention_seconds = retention_seconds
        self.in_flight = KeysInFlight()

    async def run(
        self,
        request: Request[Any, Any, Any],
        command: Command,
        render: Render,
        body: msgspec.Struct,
    ) -> Response[bytes]:
        """Execute ``command`` for ``request`` whose decoded body is ``body``."""
        raw_key = request.headers.get(IDEMPOTENCY_HEADER)
        if raw_key is None:
            return stored_to_response(render(await self.store.execute(command)))
        if not _KEY_SHAPE.fullmatch(raw_key):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                "Idempotency-Key must be 1-255 printable ASCII characters",
            )
        key = f"{_TENANT}:{raw_key}"
        idempotency = Idempotency(
            key=key,
            fingerprint=fingerprint(request.method, request.scope["path"], body),
            render=render,
            retention_seconds=self.retention_seconds,
        )
        with self.in_flight.hold(key):
            stored, replayed = await self.store.execute_idempotent(command, idempotency)
        return stored_to_response(stored, replayed=replayed)
