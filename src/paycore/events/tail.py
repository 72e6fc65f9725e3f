"""``paycore events tail``: the stream's events as JSON lines, live or replayed.

An ordered consumer (ephemeral, flow-controlled, re-created by the client from the next
sequence after a gap) reads the stream from ``from_seq`` (a stream sequence, 1 the
first; None: only what arrives from now on), filtered by one ``subject`` (NATS
wildcards: ``paycore.ledger.>``, ``paycore.payments.*.payment.>``). Each line::

    {"stream_seq": 7, "subject": "paycore.ledger.shard-0.transfer", "event": {...}}

``event`` is the message body as published (``paycore.events.schema``), byte for byte.
"""

from __future__ import annotations

from typing import TextIO

import msgspec
from nats.js.api import ConsumerConfig, DeliverPolicy

from paycore.events.publisher import connect

__all__ = ["tail"]


async def tail(
    url: str,
    out: TextIO,
    *,
    stream: str = "PAYCORE",
    subject: str = "paycore.>",
    from_seq: int | None = None,
    count: int | None = None,
    idle_seconds: float | None = None,
) -> int:
    """Print events until ``count`` were printed, or none came for ``idle_seconds``
    (None: wait for ever); returns how many were printed."""
    if from_seq is None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    else:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq
        )
    # A watcher rides out a NATS restart of about ten seconds, and gives up on one that
    # cannot be reached for as long (nats.errors.NoServersError) rather than hang.
    nc = await connect(url, name="paycore-events-tail", attempts=20)
    printed = 0
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
        while count is None or printed < count:
            try:
                msg = await sub.next_msg(timeout=idle_seconds or 3600.0)
            except TimeoutError:
                if idle_seconds is not None:
                    break
                continue
            line = {
                "stream_seq": msg.metadata.sequence.stream,
                "subject": msg.subject,
                "event": msgspec.Raw(msg.data),
            }
            out.write(msgspec.json.encode(line).decode() + "\n")
            out.flush()
            printed += 1
        await sub.unsubscribe()
    finally:
        await nc.close()
    return printed
