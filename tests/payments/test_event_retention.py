"""Payment events and processor notifications are purged after their retention by the
maintenance worker: events only once delivered or given up (all of them when no webhook
endpoint is configured), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backends import StoreFactory
from paycore.payments.service import NewPayment
from paycore.storage.payments import (
    AckPaymentEvents,
    ClaimPaymentEvents,
    ProcessorEventRow,
    PurgePaymentEvents,
    RecordProcessorEvent,
)
from paycore.workers.maintenance import MaintenanceWorker
from payments.payment_support import CARD, ManualClock, World, open_world

FAR = 2**62  # "before the end of time": everything is old enough


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def world(make_store: StoreFactory, clock: ManualClock) -> AsyncIterator[World]:
    async with open_world(make_store(clock=clock), clock, "acq-a") as w:
        yield w


async def test_only_finished_events_go_unless_no_endpoint_will_take_them(world: World) -> None:
    w = world
    await w.service.create_payment(NewPayment(500, "USD", "m1", card=CARD))
    await w.store.execute(
        RecordProcessorEvent(w.store.name, ProcessorEventRow("acq-a", "evt_1", "x", None, "{}", 1))
    )
    assert await w.store.execute(PurgePaymentEvents(FAR)) == 1  # the old notification only
    claimed = await w.store.execute(ClaimPaymentEvents(w.store.name, "me", 30.0, 1000))
    assert claimed  # the payment's events wait for delivery: kept
    await w.store.execute(AckPaymentEvents(w.store.name, delivered=tuple(e.id for e in claimed)))
    assert await w.store.execute(PurgePaymentEvents(FAR)) == len(claimed)
    assert await w.store.execute(PurgePaymentEvents(FAR)) == 0


async def test_the_maintenance_worker_purges_undelivered_events_without_endpoints(
    world: World, clock: ManualClock
) -> None:
    w = world
    await w.service.create_payment(NewPayment(500, "USD", "m1", card=CARD))
    keep = MaintenanceWorker(w.store, event_retention_seconds=3600)
    await keep.run_once()
    assert keep.events_purged_total == 0  # undelivered, and endpoints may come: kept
    purge = MaintenanceWorker(w.store, event_retention_seconds=0, undelivered_events_too=True)
    await purge.run_once()
    assert purge.events_purged_total > 0
    assert await w.store.execute(ClaimPaymentEvents(w.store.name, "me", 30.0, 1000)) == []
