"""A TCP proxy whose faults change at run time: added latency, a cut, a black hole.

``TcpProxy(upstream_host, upstream_port)`` listens on 127.0.0.1 (a free port unless one
is given) and forwards every connection to the upstream, both ways. At any moment:

- ``set_latency(seconds)``: every chunk is delivered that much later than it arrived
  (in order, without limiting throughput: a chunk waits for its own deadline only);
- ``cut()``: every open connection is reset, and new ones are accepted and reset at once
  (a client sees ECONNRESET / EOF, as when a firewall rejects);
- ``blackhole()``: nothing is forwarded any more, on open or new connections (a client
  sees its reads time out, as when a network drops packets);
- ``restore()``: back to forwarding (connections cut stay cut; a black hole's connections
  are reset, as their streams lost bytes).

Used by the chaos nemesis between an API node and a database shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import StrEnum

__all__ = ["ProxyMode", "TcpProxy"]

log = logging.getLogger(__name__)
_CHUNK = 65536


class ProxyMode(StrEnum):
    FORWARD = "forward"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Link:
    """One proxied connection: the client's and the upstream's streams."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """See the module docstring."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = port
        self.latency = 0.0
        self.mode = ProxyMode.FORWARD
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.connections = 0  # accepted so far

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults --------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        self.latency = max(0.0, seconds)

    def cut(self) -> None:
        self.mode = ProxyMode.CUT
        self._resumed.set()
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def blackhole(self) -> None:
        self.mode = ProxyMode.BLACKHOLE
        self._resumed.clear()

    def restore(self) -> None:
        if self.mode is ProxyMode.BLACKHOLE:
            for link in list(self._links):
                link.abort()
            self._links.clear()
        self.mode = ProxyMode.FORWARD
        self.latency = 0.0
        self._resumed.set()

    # -- forwarding ----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode is ProxyMode.CUT:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)
        for w in (writer, up_writer):
            w.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        """Copy one direction: a reader task stamps each chunk, this one delivers it at
        its deadline, so that latency delays without throttling."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    data = await reader.read(_CHUNK)
                    await queue.put((time.monotonic() + self.latency, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                link.abort()

        reading = asyncio.create_task(read())
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._resumed.wait()  # a black hole holds everything here
                if link not in self._links:
                    return
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            link.abort()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reading
