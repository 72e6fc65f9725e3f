"""The background jobs of one node, each run only while this node leads it.

Jobs, one leader each among all nodes (``paycore.locks.WorkerRunner``)::

    leader:relay:<shard>         settles the cross-shard sagas whose source is <shard>
    leader:maintenance:<shard>   expires holds, purges idempotency records and outbox rows
    leader:payments:<shard>      resolves payments left processing (status lookup by
                                 reference), cancels authorizations that ran out
    leader:webhooks:<shard>      sends the shard's payment events to the ``[[webhooks]]``
                                 endpoints and those made over HTTP (claims nothing
                                 while there is none)
    leader:events:<shard>        publishes the shard's ledger and payment logs to NATS
                                 JetStream (only with an ``[events]`` table)

A leader announces its fencing token to the shards it writes (``AdvanceFence``) before
it works, and every write it makes carries the token, so a leader paused past its lease
(GC, SIGSTOP, a network partition) writes nothing once the next one started. When a
leader dies, a follower takes over within about one ``leader_ttl_seconds``; when it stops
on purpose (SIGTERM) it releases its locks and a follower takes over at once.

With the ``local`` lock service (the embedded default) this node leads every job at
once, through the same code path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from paycore.cluster.router import gather_all
from paycore.config import Settings
from paycore.errors import FencedError, PaycoreError
from paycore.events.publisher import EventPublisher
from paycore.locks import HeldLease, LockService, WorkerRunner
from paycore.payments.endpoint_secrets import signing_key
from paycore.storage.base import AdvanceFence, Fence
from paycore.storage.store import Store
from paycore.workers.maintenance import MaintenanceWorker
from paycore.workers.relay import RelayWorker
from paycore.workers.webhooks import StoredEndpoints, WebhookWorker, webhook_client

if TYPE_CHECKING:
    from paycore.payments.service import PaymentService

STOP_TIMEOUT_SECONDS = 15.0

__all__ = ["WorkerSupervisor"]

log = logging.getLogger(__name__)


class WorkerSupervisor:
    """Runs the relay and maintenance jobs of ``store`` under leader election."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        locks: LockService,
        *,
        payments: PaymentService | None = None,
    ) -> None:
        self.store = store
        self.payments = payments
        self.settings = settings
        self.locks = locks
        self.shards = store.shard_stores
        ttl = settings.leader_ttl_seconds
        self.relay: RelayWorker | None = None
        self.maintenance: dict[str, MaintenanceWorker] = {}
        self.runners: list[WorkerRunner] = []
        if store.spans_shards:
            self.relay = RelayWorker(
                store,
                interval_seconds=settings.relay_interval_seconds,
                lease_seconds=settings.relay_lease_seconds,
            )
            for shard in self.shards:
                self.runners.append(
                    WorkerRunner(locks, "relay", self._relay_job(shard), shard=shard, ttl=ttl)
                )
        for shard, shard_store in self.shards.items():
            self.maintenance[shard] = MaintenanceWorker(
                shard_store,
                interval_seconds=settings.maintenance_interval_seconds,
                outbox_retention_seconds=settings.outbox_retention_hours * 3600,
                event_retention_seconds=settings.event_retention_hours * 3600,
                undelivered_events_too=not settings.webhooks,
                unpublished_events_too=settings.events is None,
            )
            self.runners.append(
                WorkerRunner(
                    locks, "maintenance", self._maintenance_job(shard), shard=shard, ttl=ttl
                )
            )
        if payments is not None:
            for shard in self.shards:
                self.runners.append(
                    WorkerRunner(locks, "payments", self._payments_job(shard), shard=shard, ttl=ttl)
                )
        # Webhooks: one sender per shard, all over one pooled HTTP client; always, since
        # endpoints may be made over HTTP at any time (a pass without any claims nothing).
        self.webhooks: dict[str, WebhookWorker] = {}
        self._webhook_client = webhook_client()
        home = store.key_store
        stored = StoredEndpoints(home, functools.partial(signing_key, settings))
        for shard, shard_store in self.shards.items():
            self.webhooks[shard] = WebhookWorker(
                shard_store, shard, settings.webhooks, stored=stored, client=self._webhook_client
            )
            self.runners.append(
                WorkerRunner(locks, "webhooks", self._webhooks_job(shard), shard=shard, ttl=ttl)
            )
        # The event stream: a publisher per shard, only when one is configured (no NATS
        # is needed otherwise).
        self.events: dict[str, EventPublisher] = {}
        if settings.events is not None:
            for shard, shard_store in self.shards.items():
                self.events[shard] = EventPublisher(shard_store, shard, settings.events)
                self.runners.append(
                    WorkerRunner(locks, "events", self._events_job(shard), shard=shard, ttl=ttl)
                )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Campaign for every job in the background; a second call is a no-op."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(r.run(), name=f"paycore-{r.job}-{r.shard}") for r in self.runners
        ]

    async def stop(self) -> None:
        """Step down from every job (jobs cancelled, locks released), then return."""
        for runner in self.runners:
            runner.stop()
        tasks, self._tasks = self._tasks, []
        if tasks:
            # Each runner bounds its own steps; this bounds the whole, so a stuck job
            # cannot hang the node's shutdown (it is logged and left behind).
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_SECONDS)
            for task in stuck:
                log.error("%s did not stop within %.0f s", task.get_name(), STOP_TIMEOUT_SECONDS)
                task.cancel()
        await self._webhook_client.aclose()
        for publisher in self.events.values():
            await publisher.aclose()

    def status(self) -> dict[str, Any]:
        """What /readyz shows: each job, whether this node leads it, and its failures."""
        jobs = []
        for runner in self.runners:
            worker = self._worker_of(runner)
            jobs.append(
                {
                    "job": runner.job,
                    "shard": runner.shard,
                    "leader": runner.is_leader,
                    "failures": runner.failures + getattr(worker, "failures", 0),
                    "last_error": runner.last_error or getattr(worker, "last_error", None),
                }
            )
        down = any(r.election.backend_down for r in self.runners)
        return {"jobs": jobs, "lock_backend_down": down}

    def webhook_totals(self) -> dict[str, dict[str, int]]:
        """Per shard, what this node's webhook sender did since it started (``/metrics``):
        events ``delivered``, ``retried``, ``failed`` (given up), and POST ``requests``."""
        return {
            shard: {
                "delivered": worker.delivered_total,
                "retried": worker.retried_total,
                "failed": worker.failed_total,
                "requests": worker.attempts_total,
            }
            for shard, worker in self.webhooks.items()
        }

    def _worker_of(self, runner: WorkerRunner) -> object:
        if runner.job == "relay":
            return self.relay
        if runner.job == "maintenance":
            return self.maintenance.get(runner.shard or "")
        if runner.job == "webhooks":
            return self.webhooks.get(runner.shard or "")
        if runner.job == "events":
            return self.events.get(runner.shard or "")
        return None  # the payments job counts its failures in its runner

    # -- the jobs ------------------------------------------------------------------------

    def _relay_job(self, shard: str) -> Any:
        async def relay(held: HeldLease) -> None:
            assert self.relay is not None
            fence = Fence(held.name, held.fencing_token)
            # The source shard must know the new token before anything else; a peer
            # that is down learns it from this leader's first write there instead.
            await self.shards[shard].execute(AdvanceFence(fence))
            await self._announce(fence, skip=shard)
            await self.relay.serve_shard(shard, fence, held.check)

        return relay

    def _maintenance_job(self, shard: str) -> Any:
        async def maintain(held: HeldLease) -> None:
            fence = Fence(held.name, held.fencing_token)
            await self.shards[shard].execute(AdvanceFence(fence))
            await self.maintenance[shard].serve(fence, held.check)

        return maintain

    def _payments_job(self, shard: str) -> Any:
        async def settle_payments(held: HeldLease) -> None:
            assert self.payments is not None
            fence = Fence(held.name, held.fencing_token)
            await self.shards[shard].execute(AdvanceFence(fence))
            interval = self.settings.payment_worker_interval_seconds
            while True:
                held.check()
                try:
                    await self.payments.resolve_processing(
                        fence=fence,
                        older_than=self.settings.payment_resolve_after_seconds,
                        shards=[shard],
                    )
                    await self.payments.expire_authorizations(fence=fence, shards=[shard])
                except FencedError:
                    raise  # another node leads this job now
                except PaycoreError as exc:  # a shard or processor down: next round
                    log.warning("payments job on %s: %s", shard, exc)
                await asyncio.sleep(interval)

        return settle_payments

    def _webhooks_job(self, shard: str) -> Any:
        async def send_webhooks(held: HeldLease) -> None:
            fence = Fence(held.name, held.fencing_token)
            await self.shards[shard].execute(AdvanceFence(fence))
            await self.webhooks[shard].serve(fence, held.check)

        return send_webhooks

    def _events_job(self, shard: str) -> Any:
        async def publish_events(held: HeldLease) -> None:
            fence = Fence(held.name, held.fencing_token)
            await self.shards[shard].execute(AdvanceFence(fence))
            await self.events[shard].serve(fence, held.check)

        return publish_events

    async def _announce(self, fence: Fence, *, skip: str) -> None:
        peers = [s for name, s in self.shards.items() if name != skip]
        try:
            await gather_all(s.execute(AdvanceFence(fence)) for s in peers)
        except PaycoreError as exc:
            log.warning("%s: token %d not announced everywhere: %s", fence.name, fence.token, exc)
