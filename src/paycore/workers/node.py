"""``paycore worker``: a node that runs the background jobs only, no API.

It opens the shards and the lock service of its settings and campaigns for every job
(``WorkerSupervisor``); SIGTERM or SIGINT makes it step down (jobs cancelled, locks
released, so another node takes over at once) and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.locks import open_lock_service
from paycore.workers.supervisor import WorkerSupervisor

__all__ = ["run_worker_node"]

log = logging.getLogger(__name__)


async def run_worker_node(settings: Settings, *, ready: asyncio.Event | None = None) -> int:
    """Run the jobs of ``settings``' topology until SIGTERM/SIGINT; returns the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = build_store(settings)
    await store.start()
    try:
        async with open_lock_service(settings.locks_url) as locks:
            supervisor = WorkerSupervisor(store, settings, locks)
            await supervisor.start()
            log.info(
                "worker node up: %d job(s), locks %s",
                len(supervisor.runners),
                settings.locks_url.split("@")[-1],  # no credentials in the log
            )
            if ready is not None:
                ready.set()
            try:
                await stop.wait()
            finally:
                log.info("worker node stopping: stepping down from every job")
                await supervisor.stop()
    finally:
        await store.stop()
    return 0
