"""Every write goes through ``WriteExecutor``, under the request's Idempotency-Key if any.

With a key, the store looks the key up and keeps the rendered answer in the same
transaction as the effect, so a retry gets the first answer (errors included) and
never acts twice. The fingerprint is the method, the path and the *decoded* body
re-encoded with sorted keys and defaults filled in: a client that reorders keys
on retry is still the same request; one that changes a value is not.

Bodies that fail validation are refused before the key is looked at, and nothing
is stored for them (Stripe does the same): the same bad body gets the same 422
again, and a corrected body may reuse the key.

A key in flight (its first request still running) is guarded twice:

1. ``KeysInFlight``, in this process: free, and answers a second request at once.
2. The lock ``idem:<sha256 of the key>`` in the cluster's lock service, held while
   the command runs (renewed every ttl/3 if it runs long, released after). A second
   node that finds it held answers 409 ``idempotency_key_in_use`` at once, exactly
   as a second request on the same node does: it does not wait for the first and
   replay. A client (or a load balancer) retries a 409 and then gets the replay, so
   waiting would buy little, and it would tie up a request slot and poll the lock
   service for every duplicate, the worst moment to add load (a retry storm).

The store alone keeps a command that is one transaction safe (the second one finds
the key's record and replays it), but on a sharded store a request's transfers and
accounts are written on their own shards before the key's record is written on the
key's shard: two nodes running it at once would both write there (two accounts for
one keyed ``POST /v1/accounts`` without an id, one answer stored and another
returned). So the lock is taken only where that can happen: a store of several
shards and a lock service that spans nodes; with the in-process ("local") service
of the embedded mode, or a store of one shard, nothing changes.

When the lock service cannot be reached the request fails safe, before it did
anything: 503 ``lock_unavailable`` with Retry-After. Requests without a key (reads,
writes whose ids make them idempotent by themselves) never touch the lock service.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import msgspec
from litestar import Request, Response

from paycore.api.auth import tenant_of
from paycore.api.schemas import canonical_json
from paycore.errors import ErrorCode, IdempotencyError, RequestError, key_in_use
from paycore.locks import HeldLease, LocalLockService, LockService, LockUnavailable
from paycore.storage.base import CreateAccounts, Idempotency, PeekIdempotency, StoredResponse
from paycore.storage.store import Command, Store

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "KeysInFlight",
    "Render",
    "RequestKeys",
    "WriteExecutor",
    "fingerprint",
    "key_lock_name",
    "needs_cluster_lock",
    "stored_to_response",
]

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER: Final = "idempotency-key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_KEY_SHAPE: Final = re.compile(r"[\x20-\x7e]{1,255}")

Render = Callable[[Any], StoredResponse]
"""Turns a command's result into the exact HTTP answer; pure, runs in the store's writer."""


class KeysInFlight:
    """Keys whose first request is still running in this process.

    A second request with the same key must not wait for, or race, the first: it
    gets 409 ``idempotency_key_in_use`` and may retry. Across API nodes the key's
    lock does the same (``WriteExecutor``); this set answers without a round trip.
    """

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self._keys)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if key in self._keys:
            raise key_in_use()
        self._keys.add(key)
        try:
            yield
        finally:
            self._keys.discard(key)


def key_lock_name(key: str) -> str:
    """The lock of an Idempotency-Key (tenant-scoped) in flight: ``idem:`` and the
    SHA-256 of the key, so any client string makes a short name without ``{}`` (Redis
    hash tags) or other characters that a backend might read."""
    return "idem:" + hashlib.sha256(key.encode()).hexdigest()


def needs_cluster_lock(store: Store, locks: LockService | None) -> bool:
    """Whether keyed requests on ``store`` must hold the key's lock (module docstring):
    only a store of several shards, with a lock service that other nodes share."""
    if locks is None or isinstance(locks, LocalLockService):
        return False
    return store.spans_shards


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


class RequestKeys:
    """The Idempotency-Key protocol of every write route, the ledger's and the payments':
    the header checked and scoped by tenant, the request fingerprinted, and the key held
    while its request runs (409 ``idempotency_key_in_use`` to a twin, on this node at once,
    on another through the key's cluster-wide lock). What the key then guards is the
    store's: the key's record written in the same transaction as the work.
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_seconds: int,
        locks: LockService | None = None,
        lock_seconds: float = 30.0,
    ) -> None:
        self.retention_seconds = retention_seconds
        self.in_flight = KeysInFlight()
        self.locks = locks if needs_cluster_lock(store, locks) else None
        self.lock_seconds = lock_seconds

    def of(
        self, request: Request[Any, Any, Any], body: msgspec.Struct, render: Render
    ) -> Idempotency | None:
        """The request's key, or None when it sent none; 422 for a malformed one."""
        raw_key = request.headers.get(IDEMPOTENCY_HEADER)
        if raw_key is None:
            return None
        if not _KEY_SHAPE.fullmatch(raw_key):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                "Idempotency-Key must be 1-255 printable ASCII characters",
            )
        return Idempotency(
            # Scoped by tenant: two tenants' keys never meet (nor replay each other's).
            key=f"{tenant_of(request)}:{raw_key}",
            fingerprint=fingerprint(request.method, request.scope["path"], body),
            render=render,
            retention_seconds=self.retention_seconds,
        )

    @asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[None]:
        """Hold ``key`` for the block: no twin runs meanwhile, here or on another node."""
        with self.in_flight.hold(key):
            async with self.key_lock(key):
                yield

    @asynccontextmanager
    async def key_lock(self, key: str) -> AsyncIterator[HeldLease | None]:
        """Hold ``key``'s cluster-wide lock for the block (None: none is needed).

        409 ``idempotency_key_in_use`` when another node holds it; 503
        ``lock_unavailable`` when the lock service cannot answer (nothing ran). The
        block is never cancelled if the lease is lost meanwhile (only possible after
        ``lock_seconds`` without a renewal getting through): stopping a write half-way
        would be worse than finishing it, and the store's own checks (transfer ids,
        the key's record) still hold.
        """
        if self.locks is None:
            yield None
            return
        name = key_lock_name(key)
        try:
            lease = await self.locks.acquire(name, self.lock_seconds)
        except LockUnavailable as exc:
            log.warning("Idempotency-Key lock not taken, request refused: %s", exc.detail)
            raise LockUnavailable(
                "Idempotency-Key",
                "the lock service cannot be reached, so the request was not run; retry later",
            ) from exc
        if lease is None:
            raise key_in_use()
        held = HeldLease(self.locks, lease, self.lock_seconds).start()
        try:
            yield held
        finally:
            # Shielded: a cancelled request (client gone) still gives the key back at
            # once rather than blocking retries until the TTL.
            await asyncio.shield(held.release())
            if held.lost:
                log.warning("Idempotency-Key lock %s was lost while its request ran", name)


class WriteExecutor:
    """Runs write commands against the store and answers them, idempotently when asked
    (the key's protocol: ``keys``, which the payment routes share).

    ``locks`` is the node's lock service and ``lock_seconds`` the TTL of a key's lock
    (``Settings.idempotency_lock_seconds``); see the module docstring for when it is
    used.
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_seconds: int,
        locks: LockService | None = None,
        lock_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.keys = RequestKeys(
            store, retention_seconds=retention_seconds, locks=locks, lock_seconds=lock_seconds
        )

    @property
    def in_flight(self) -> KeysInFlight:
        return self.keys.in_flight

    @property
    def locks(self) -> LockService | None:
        return self.keys.locks

    async def run(
        self,
        request: Request[Any, Any, Any],
        command: Command,
        render: Render,
        body: msgspec.Struct,
    ) -> Response[bytes]:
        """Execute ``command`` for ``request`` whose decoded body is ``body``.

        Nothing that can fail runs between the commit and the answer: ``render`` only
        turns the result into bytes, from data bounded when it was decoded
        (``bodies.MAX_BODY_DEPTH``, ``schemas.METADATA_RULES``) or read back safely
        (``storage.codec``), with no I/O. Keyed, it runs inside the store's transaction
        (the stored answer is the one given); unkeyed, a retry finds the committed
        result by its ids and renders it again.
        """
        stored, replayed = await self.execute(request, command, render, body)
        return stored_to_response(stored, replayed=replayed)

    async def run_steps(
        self,
        request: Request[Any, Any, Any],
        body: msgspec.Struct,
        steps: Callable[[], Awaitable[StoredResponse]],
    ) -> Response[bytes]:
        """Answer ``request`` (decoded body ``body``) with ``steps``: work that is not one
        store command but several transactions, each safe to repeat (a settlement
        report's import), under the request's Idempotency-Key if any.

        Keyed, the key is held while the steps run (a twin: 409), a key seen before is
        answered with its stored answer without running them (another body: 409
        ``idempotency_key_reused``), and their answer is stored after them on the key's
        shard, as the router stores the answer of a command run on another shard. A
        crash in between stores nothing: a retry runs the steps again, which is why they
        must be safe to repeat. What ``steps`` raises is not stored (a body refused as
        invalid, a retryable refusal); what it returns is, problems included.
        """
        idempotency = self.keys.of(request, body, _stored_as_is)
        if idempotency is None:
            return stored_to_response(await steps())
        async with self.keys.held(idempotency.key):
            home = self.store.shard_stores[self.store.shard_of(idempotency.key)]
            seen = await home.execute(PeekIdempotency(idempotency.key))
            if seen is not None:
                if seen[0] != idempotency.fingerprint:
                    raise IdempotencyError(
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "this Idempotency-Key was first used with a different request",
                    )
                return stored_to_response(seen[1], replayed=True)
            answer = await steps()
            record = Idempotency(
                idempotency.key,
                idempotency.fingerprint,
                lambda _: answer,
                idempotency.retention_seconds,
            )
            stored, replayed = await home.execute_idempotent(CreateAccounts(()), record)
            return stored_to_response(stored, replayed=replayed)

    async def execute(
        self,
        request: Request[Any, Any, Any],
        command: Command,
        render: Render,
        body: msgspec.Struct,
    ) -> tuple[StoredResponse, bool]:
        """``run``'s answer before it becomes a response, and whether it is a replay."""
        idempotency = self.keys.of(request, body, render)
        if idempotency is None:
            return render(await self.store.execute(command)), False
        async with self.keys.held(idempotency.key):
            return await self.store.execute_idempotent(command, idempotency)


def _stored_as_is(answer: Any) -> StoredResponse:
    """The render of ``run_steps``' key: its answer is made before it is stored."""
    assert isinstance(answer, StoredResponse)
    return answer
