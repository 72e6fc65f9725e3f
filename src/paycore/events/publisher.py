"""The publisher: one shard's logs to NATS JetStream, at least once, in order.

One publisher per shard (the ``leader:events:<shard>`` job) runs passes; each pass, for
each log (``ledger``, then ``payments``; ``paycore.storage.event_stream``)::

    read      the rows after the log's cursor, oldest first (at most ``batch_limit``)
    publish   each as an event (``paycore.events.schema``), one at a time, awaiting
              JetStream's ack before the next, with ``Nats-Msg-Id: <event id>``
    advance   the cursor to the last row, fenced by the job's leadership

The cursor moves only after every event up to it was acknowledged, so a publisher
killed anywhere before that publishes the same events again when it (or its successor)
restarts: JetStream drops an id it has seen within ``duplicate_window_seconds`` (the
ack says ``duplicate``), and consumers de-duplicate by ``id`` beyond that. One event at
a time, because a pipelined batch interrupted by a reconnect could store a later event
before an earlier one is retried: order per shard matters more than throughput here.

While NATS is down (or restarts) a publish fails or times out: the pass is retried with
jittered exponential backoff (stamina), the cursor untouched; the client reconnects by
itself. The stream is made, or its subjects and window updated, on first connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
import stamina
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from paycore.config import EventStreamConfig
from paycore.errors import UnavailableError
from paycore.events.schema import (
    Event,
    encode_event,
    payment_event,
    subject_of,
    transfer_event,
)
from paycore.redaction import redact_url
from paycore.storage.base import Fence
from paycore.storage.event_stream import LOGS, AdvanceStreamCursor
from paycore.storage.store import ShardStore

__all__ = ["MSG_ID_HEADER", "EventPublisher", "connect", "ensure_stream"]

log = logging.getLogger(__name__)

MSG_ID_HEADER: Final = "Nats-Msg-Id"
# What a pass may fail with and be retried for: NATS away or slow, a shard away.
_TRANSIENT: Final = (nats.errors.Error, OSError, asyncio.TimeoutError, UnavailableError)


async def connect(url: str, *, name: str, attempts: int = -1) -> NATS:
    """A client that reconnects by itself (a restarted NATS is found again), ``attempts``
    times in a row, half a second apart (-1: for ever), the first connection included;
    logging each connection problem in one line (the client's default logs a traceback
    per reconnect attempt)."""
    where = redact_url(url)

    async def on_error(exc: Exception) -> None:
        log.info("NATS %s (%s): %s: %s", where, name, type(exc).__name__, exc)

    client: list[NATS] = []  # set once connected: a disconnection by close() is no news

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return
        log.warning("NATS %s (%s): disconnected; reconnecting", where, name)

    async def on_reconnect() -> None:
        log.warning("NATS %s (%s): reconnected", where, name)

    nc = await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=attempts,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    client.append(nc)
    return nc


async def ensure_stream(js: JetStreamContext, config: EventStreamConfig) -> None:
    """Make the stream, or give an existing one our subjects and de-dup window."""
    subjects = [f"{config.subject_prefix}.>"]
    try:
        info = await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=subjects,
                storage=StorageType.FILE,
                duplicate_window=config.duplicate_window_seconds,
            )
        )
        return
    have = info.config
    missing = [s for s in subjects if s not in (have.subjects or [])]
    if missing or have.duplicate_window != config.duplicate_window_seconds:
        await js.update_stream(
            dataclasses.replace(
                have,
                subjects=[*(have.subjects or []), *missing],
                duplicate_window=config.duplicate_window_seconds,
            )
        )


class EventPublisher:
    """Publishes the logs of one shard (``store``, named ``shard``) to ``config``'s stream.

    ``after_publish``: called with each event once NATS acknowledged it and before the
    cursor moves (the crash window that the tests exercise); None in production.
    """

    def __init__(
        self,
        store: ShardStore,
        shard: str,
        config: EventStreamConfig,
        *,
        after_publish: Callable[[Event], None] | None = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.reads = store.event_stream
        self.config = config
        self.after_publish = after_publish
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        # Counters for /readyz (and tests).
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        self.published_total = 0
        self.duplicates_total = 0  # acks that said NATS had the id already

    async def aclose(self) -> None:
        """Close the NATS connection, if any."""
        nc, self._nc, self._js = self._nc, None, None
        self._stream_ready = False
        if nc is not None and not nc.is_closed:
            # Closing flushes what is pending: a NATS that is away breaks the flush.
            with contextlib.suppress(*_TRANSIENT):
                await nc.close()

    async def _jetstream(self) -> JetStreamContext:
        if self._nc is None or self._nc.is_closed or self._js is None:
            self._nc = await connect(self.config.nats_url, name=f"paycore-events-{self.shard}")
            self._js = self._nc.jetstream(timeout=self.config.publish_timeout_seconds)
            self._stream_ready = False
        if not self._stream_ready:
            await ensure_stream(self._js, self.config)
            self._stream_ready = True
        return self._js

    # -- one pass ----------------------------------------------------------------------------

    async def run_once(self, fence: Fence | None = None) -> int:
        """Publish what each log holds after its cursor (a batch each); how many events.
        Raises what NATS or the shard raised; the cursor then stays where NATS's last
        ack of a whole batch left it."""
        js = await self._jetstream()
        published = 0
        for name in LOGS:
            published += await self._publish_log(js, name, fence)
        self.passes += 1
        return published

    async def _publish_log(self, js: JetStreamContext, name: str, fence: Fence | None) -> int:
        cursor = await self.reads.cursor(name)
        limit = self.config.batch_limit
        batch: list[tuple[Event, int, int]]  # the event, its seq and timestamp
        if name == "ledger":
            records = await self.reads.transfers_after(cursor.timestamp, limit)
            if records and records[0].seq != cursor.seq + 1:
                # The chain has no gaps: a cursor out of step with it (a table restored
                # apart from the other) is worth a look; the events go out all the same.
                log.error(
                    "events on %s: ledger cursor at seq %d, next transfer is seq %d",
                    self.shard,
                    cursor.seq,
                    records[0].seq,
                )
            batch = [(transfer_event(self.shard, r), r.seq, r.transfer.timestamp) for r in records]
        else:
            rows = await self.reads.payment_events_after(cursor.timestamp, limit)
            batch = [(payment_event(self.shard, r), r.timestamp, r.timestamp) for r in rows]
        for event, _, _ in batch:
            ack = await js.publish(
                subject_of(self.config.subject_prefix, event),
                encode_event(event),
                stream=self.config.stream,
                headers={MSG_ID_HEADER: event.id},
            )
            self.published_total += 1
            if ack.duplicate:
                self.duplicates_total += 1
            if self.after_publish is not None:
                self.after_publish(event)
        if batch:
            _, seq, timestamp = batch[-1]
            await self.store.execute(
                AdvanceStreamCursor(self.shard, name, seq, timestamp, fence=fence)
            )
        return len(batch)

    # -- the loop ------------------------------------------------------------------------------

    def _transient(self, exc: BaseException) -> bool:
        """Whether a failed pass is retried (after backoff); counts and logs it."""
        if not isinstance(exc, _TRANSIENT):
            return False
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._stream_ready = False  # a NATS that lost its store needs the stream again
        log.warning(
            "events on %s: %s (NATS %s); retrying",
            self.shard,
            self.last_error,
            redact_url(self.config.nats_url),
        )
        return True

    async def _pass(self, fence: Fence | None, check: Callable[[], None] | None) -> int:
        wait_max = self.config.retry_max_seconds
        async for attempt in stamina.retry_context(
            on=self._transient,
            attempts=None,
            timeout=None,
            wait_initial=min(0.1, wait_max),
            wait_max=wait_max,
            wait_jitter=wait_max / 10,
        ):
            with attempt:
                if check is not None:
                    check()
                return await self.run_once(fence)
        raise AssertionError("unreachable: stamina retries without end")  # pragma: no cover

    async def serve(
        self, fence: Fence | None = None, check: Callable[[], None] | None = None
    ) -> None:
        """Run passes until cancelled, fenced with ``fence``; ``check`` raises when the
        leadership is gone. A full batch is followed by the next pass at once, else by a
        pause of ``interval_seconds``. A NATS or shard failure is retried with backoff
        (the cursor stays); any other error ends the loop (a fenced write: another node
        publishes now). The connection is closed on the way out."""
        try:
            while True:
                published = 0
                # stamina gives up only in its test mode (attempts capped): next tick.
                with contextlib.suppress(*_TRANSIENT):
                    published = await self._pass(fence, check)
                if published < self.config.batch_limit:
                    await asyncio.sleep(self.config.interval_seconds)
        finally:
            await self.aclose()

    def status(self) -> dict[str, Any]:
        return {"published": self.published_total, "duplicates": self.duplicates_total}
