"""The webhook sender: POSTs each shard's payment events to the configured endpoints.

The events are a transactional outbox: ``payment_events`` rows are written in the
transaction of the change they report (``paycore.storage.payments``). One sender per
shard (the ``leader:webhooks:<shard>`` job) runs passes::

    claim    ClaimPaymentEvents: the oldest due events, leased to this sender (each
             claim counts one attempt); fenced, so a deposed leader claims nothing
    send     every event to every endpoint of its tenant whose ``events`` match and
             that has not answered 2xx to it yet (``webhook_deliveries``), concurrently,
             signed (``paycore.payments.webhooks.deliver``), over one pooled HTTP client
    ack      AckPaymentEvents, fenced: what each endpoint answered; an event every
             endpoint took is delivered; else it comes back after
             ``next_attempt_delay(attempts)`` (only to the endpoints still missing), and
             once the schedule is over (about a day) it is given up (``failed``)

Delivery is at least once per endpoint: a sender that dies (or is deposed) between the
POST and the ack sends again after the claim's lease, with the same event id and the
same body; receivers deduplicate by ``Paycore-Event-Id``. A 4xx (other than 408/429) is
retried like a 5xx, since a receiver's configuration may be fixed within the day, and is
recorded as ``rejected``. Events are sent oldest first but concurrently, so a receiver
must not rely on their order (``created_at`` and the object's status tell).

Endpoints come from the settings (``[[webhooks]]``) and from the database, made over
HTTP (``StoredEndpoints``: read from the key shard again every few seconds, their
secrets derived, ``paycore.payments.endpoint_secrets``); an event is matched against
the endpoints that exist when it is sent. An event with ``only_endpoint`` (a test
event, a redelivery) goes to that endpoint alone, whatever its ``events``. In the
delivery log a config endpoint is named by its URL, an HTTP-made one by its id.

Each endpoint belongs to one tenant and only ever
gets that tenant's events: the store stamps every event with the tenant of the account
that owns its object, in the transaction that writes it (``EventRow.tenant``). An event
no endpoint takes (its tenant has none, or none subscribed to its type) is delivered to
nobody, so it never holds up the outbox, and is purged with the delivered ones. While
there is no endpoint at all, a pass claims nothing and the events wait in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import msgspec

from paycore.config import WebhookEndpointConfig
from paycore.errors import FencedError
from paycore.payments.endpoint_secrets import endpoint_secret
from paycore.payments.webhooks import (
    RETRY_SCHEDULE,
    DeliveryOutcome,
    DeliveryResult,
    deliver,
    event_body,
    event_matches,
    next_attempt_delay,
)
from paycore.redaction import redact_text, redact_url
from paycore.storage.base import Fence
from paycore.storage.payments import (
    AckPaymentEvents,
    ClaimPaymentEvents,
    EventRow,
    WebhookDeliveryRow,
)
from paycore.storage.store import ShardStore
from paycore.storage.webhook_endpoints import WebhookEndpointRow

__all__ = ["StoredEndpoints", "Target", "WebhookPass", "WebhookWorker", "webhook_client"]

log = logging.getLogger(__name__)

_NS = 1_000_000_000
# The request timeout of an endpoint made over HTTP (a config endpoint sets its own).
STORED_ENDPOINT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint as the sender uses it. ``key``: its name in the delivery log (a
    config endpoint's URL, an HTTP-made endpoint's id)."""

    key: str
    url: str
    secrets: tuple[str, ...]
    events: tuple[str, ...]
    tenant: str
    timeout_seconds: float

    @classmethod
    def of_config(cls, endpoint: WebhookEndpointConfig) -> Target:
        return cls(
            endpoint.url,
            endpoint.url,
            endpoint.secrets,
            endpoint.events,
            endpoint.tenant,
            endpoint.timeout_seconds,
        )

    def takes(self, event: EventRow) -> bool:
        """Whether this endpoint gets ``event`` (see the module docstring)."""
        if event.tenant != self.tenant:
            return False
        if event.only_endpoint is not None:
            return event.only_endpoint == self.key
        return event_matches(self.events, event.type)


class StoredEndpoints:
    """The endpoints made over HTTP, read from ``home`` (the key shard) at most every
    ``refresh_seconds``, with their secrets derived from the key ``signing_key`` gives
    (asked once, when there is a first endpoint: a node without any never makes one)."""

    def __init__(
        self,
        home: ShardStore,
        signing_key: Callable[[], bytes],
        *,
        refresh_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reads = home.webhook_endpoints
        self._signing_key = signing_key
        self._key: bytes | None = None
        self.refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._rows: list[WebhookEndpointRow] = []
        self._until = -math.inf

    async def targets(self, now: int) -> list[Target]:
        """The endpoints as of at most ``refresh_seconds`` ago; ``now``: ns, for which
        secret versions sign."""
        if self._monotonic() >= self._until:
            self._rows = await self.reads.all()
            self._until = self._monotonic() + self.refresh_seconds
        if self._rows and self._key is None:
            self._key = self._signing_key()
        key = self._key or b""
        return [
            Target(
                row.id,
                row.url,
                tuple(endpoint_secret(key, row.id, v) for v in row.secret_versions(now)),
                tuple(row.events.split(",")),
                row.tenant,
                STORED_ENDPOINT_TIMEOUT_SECONDS,
            )
            for row in self._rows
        ]


def webhook_client(
    *, max_connections: int = 64, max_keepalive_connections: int = 16
) -> httpx.AsyncClient:
    """The HTTP client of the senders: pooled keep-alive connections, no redirects
    followed (a 3xx is retried like a 5xx), a timeout per endpoint set on each request."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, connect=2.0),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
    )


@dataclass
class WebhookPass:
    """What one pass did: events claimed, and how many ended each way."""

    claimed: int = 0
    attempts: int = 0  # POSTs made
    delivered: list[str] = field(default_factory=list)  # events every endpoint took
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # given up


class WebhookWorker:
    """Sends the events of one shard (``store``, its name ``shard``) to ``endpoints``
    (the config file's) and to the ``stored`` ones (made over HTTP; None: none).

    ``client``: a shared HTTP client (closed by its owner); None: one of its own, closed by
    ``aclose``. ``schedule``: the retry delays (seconds; tests shrink it). ``clock``:
    nanoseconds, the store's clock (a retry's not-before time and the signature's ``t``).
    """

    def __init__(
        self,
        store: ShardStore,
        shard: str,
        endpoints: Sequence[WebhookEndpointConfig],
        *,
        stored: StoredEndpoints | None = None,
        client: httpx.AsyncClient | None = None,
        schedule: Sequence[float] = RETRY_SCHEDULE,
        clock: Callable[[], int] = time.time_ns,
        interval_seconds: float = 1.0,
        batch_limit: int = 100,
        concurrency: int = 16,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints and stored is None:
            raise ValueError("a webhook sender needs at least one endpoint")
        urls = [e.url for e in endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("two [[webhooks]] tables name the same url")
        if interval_seconds <= 0 or batch_limit < 1 or concurrency < 1:
            raise ValueError("interval, batch limit and concurrency must be positive")
        if any(not (math.isfinite(d) and d >= 0) for d in schedule):
            raise ValueError("retry delays must be finite and >= 0")
        self.store = store
        self.shard = shard
        self.reads = store.payments
        self.endpoints = tuple(endpoints)
        self.configured = tuple(Target.of_config(e) for e in endpoints)
        self.stored = stored
        self.concurrency = concurrency
        self.schedule = tuple(schedule)
        self.clock = clock
        self.interval_seconds = interval_seconds
        self.batch_limit = batch_limit
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._client = client
        self._owns_client = client is None
        self._limit = asyncio.Semaphore(concurrency)
        self.lease_seconds = self._lease_for(self.configured)
        # Counters for /readyz (and tests).
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.attempts_total = 0
        self.delivered_total = 0
        self.retried_total = 0
        self.failed_total = 0

    def _lease_for(self, targets: Sequence[Target]) -> float:
        """A claim outlives the slowest pass: every POST of a full batch timing out."""
        if not targets:
            return 30.0
        slowest = max(t.timeout_seconds for t in targets)
        rounds = math.ceil(self.batch_limit * len(targets) / self.concurrency)
        return max(30.0, rounds * slowest * 1.5 + 5.0)

    async def _targets(self) -> list[Target]:
        stored = [] if self.stored is None else await self.stored.targets(self.clock())
        return [*self.configured, *stored]

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = webhook_client()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this worker made it."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- one pass ----------------------------------------------------------------------------

    async def run_once(self, fence: Fence | None = None) -> WebhookPass:
        """Claim due events, send them, ack the outcomes (see the module docstring).
        Raises ``FencedError`` when another sender leads this shard now."""
        report = WebhookPass()
        targets = await self._targets()
        if not targets:  # nobody to send to: the events wait in the outbox
            self.passes += 1
            return report
        self.lease_seconds = self._lease_for(targets)
        events: list[EventRow] = await self.store.execute(
            ClaimPaymentEvents(
                self.shard, self.owner, self.lease_seconds, self.batch_limit, fence=fence
            )
        )
        report.claimed = len(events)
        if not events:
            self.passes += 1
            return report
        done = await self._delivered_before([e.id for e in events if e.attempts > 1])
        bodies: dict[str, bytes] = {}
        for event in events:
            try:
                bodies[event.id] = event_body(event)
            except msgspec.DecodeError:  # never written so; given up rather than block
                log.error("webhooks: event %s has a payload that is not JSON", event.id)
        sends: list[tuple[EventRow, Target]] = [
            (event, target)
            for event in events
            for target in targets
            if event.id in bodies and target.takes(event) and (event.id, target.key) not in done
        ]
        results = await asyncio.gather(
            *(self._send(endpoint, event.id, bodies[event.id]) for event, endpoint in sends)
        )
        report.attempts = len(sends)
        ack = self._ack(events, bodies, sends, results, report=report, fence=fence)
        await self.store.execute(ack)
        self.passes += 1
        self.attempts_total += report.attempts
        self.delivered_total += len(report.delivered)
        self.retried_total += len(report.retried)
        self.failed_total += len(report.failed)
        for event_id in report.failed:
            log.warning(
                "webhooks: event %s given up after %d attempts", event_id, len(self.schedule) + 1
            )
        return report

    async def _delivered_before(self, event_ids: list[str]) -> set[tuple[str, str]]:
        """(event, endpoint) pairs that answered 2xx in an earlier attempt."""
        if not event_ids:
            return set()
        rows = await self.reads.webhook_deliveries(event_ids)
        return {(r.event_id, r.endpoint) for r in rows if r.status == "delivered"}

    async def _send(self, endpoint: Target, event_id: str, body: bytes) -> DeliveryResult:
        async with self._limit:
            try:
                return await deliver(
                    self.client,
                    endpoint.url,
                    event_id,
                    body,
                    endpoint.secrets,
                    now=self.clock() // _NS,
                    timeout_seconds=endpoint.timeout_seconds,
                )
            except Exception as exc:  # noqa: BLE001 - one odd request must not sink the pass
                log.warning(
                    "webhooks: POST %s to %s: %s",
                    event_id,
                    redact_url(endpoint.url),
                    redact_text(repr(exc)),
                )
                return DeliveryResult(DeliveryOutcome.RETRY, None, type(exc).__name__, 0.0)

    def _ack(
        self,
        events: Sequence[EventRow],
        bodies: Mapping[str, bytes],
        sends: Sequence[tuple[EventRow, Target]],
        results: Sequence[DeliveryResult],
        *,
        report: WebhookPass,
        fence: Fence | None,
    ) -> AckPaymentEvents:
        now = self.clock()
        outcomes: dict[str, list[tuple[str, DeliveryResult]]] = {e.id: [] for e in events}
        for (event, endpoint), result in zip(sends, results, strict=True):
            outcomes[event.id].append((endpoint.key, result))
        retry: list[tuple[str, int]] = []
        rows: list[WebhookDeliveryRow] = []
        for event in events:
            sent = outcomes[event.id]
            missing = any(r.outcome is not DeliveryOutcome.DELIVERED for _, r in sent)
            delay = None
            if missing:
                delay = next_attempt_delay(event.attempts, self.rng, schedule=self.schedule)
            if event.id not in bodies:
                report.failed.append(event.id)
            elif not missing:
                report.delivered.append(event.id)
            elif delay is not None:
                report.retried.append(event.id)
                retry.append((event.id, now + int(delay * _NS)))
            else:
                report.failed.append(event.id)
            for url, result in sent:
                if result.outcome is DeliveryOutcome.DELIVERED:
                    status = "delivered"
                else:
                    status = "pending" if delay is not None else "failed"
                rows.append(
                    WebhookDeliveryRow(
                        event_id=event.id,
                        endpoint=url,
                        status=status,
                        outcome=result.outcome.value,
                        last_status=result.status,
                        last_error=result.error,
                    )
                )
        return AckPaymentEvents(
            self.shard,
            delivered=tuple(report.delivered),
            retry=tuple(retry),
            fence=fence,
            failed=tuple(report.failed),
            deliveries=tuple(rows),
        )

    # -- the loop ------------------------------------------------------------------------------

    async def serve(
        self, fence: Fence | None = None, check: Callable[[], None] | None = None
    ) -> None:
        """Run passes until cancelled, fenced with ``fence``; ``check`` runs before each
        and raises when the leadership is gone. A full batch is followed by the next pass
        at once, else by a pause of ``interval_seconds``. A fenced pass ends the loop with
        the error; other failures (a shard down) are counted and retried."""
        while True:
            if check is not None:
                check()
            claimed = 0
            try:
                claimed = (await self.run_once(fence)).claimed
            except FencedError:
                raise  # another node sends this shard's events now
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried next tick
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("webhooks pass on %s failed: %s", self.shard, self.last_error)
            if claimed < self.batch_limit:
                await asyncio.sleep(self.interval_seconds)
