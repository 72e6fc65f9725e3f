"""The event stream: every ledger and payment change, published to NATS JetStream.

::

    schema.py     the events (version 1): envelope, ids, subjects, bytes; pure
    publisher.py  one shard's logs -> JetStream, at least once, in order, de-duplicated
                  by id (the ``leader:events:<shard>`` job, ``paycore.workers.supervisor``)
    tail.py       ``paycore events tail``: print them, live or from a stream sequence

The shard's own logs are the outbox (``paycore.storage.event_stream``); see
docs/events.md for the subjects, the schema and how to consume them.
"""
