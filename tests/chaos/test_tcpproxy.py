"""The TCP proxy forwards, delays, cuts and black-holes real connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from paycore.chaos.tcpproxy import TcpProxy


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """An echo server on a free port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 2.0)
    finally:
        writer.close()


async def test_forwards_both_ways(echo: int) -> None:
    async with TcpProxy("127.0.0.1", echo) as proxy:
        assert await roundtrip(proxy.port) == b"ping"
        big = bytes(range(256)) * 4096  # 1 MiB, many chunks, in order
        assert await roundtrip(proxy.port, big) == big


async def test_added_latency_then_back(echo: int) -> None:
    """Latency delays each direction by the set amount; restore takes it away."""
    async with TcpProxy("127.0.0.1", echo) as proxy:
        proxy.set_latency(0.15)
        t0 = time.monotonic()
        assert await roundtrip(proxy.port) == b"ping"
        assert time.monotonic() - t0 >= 0.3  # there and back
        proxy.restore()
        t0 = time.monotonic()
        await roundtrip(proxy.port)
        assert time.monotonic() - t0 < 0.15


async def test_cut_resets_open_and_new_connections(echo: int) -> None:
    """A cut closes every open connection and refuses new ones until restored."""
    async with TcpProxy("127.0.0.1", echo) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.cut()

        async def send_more() -> bytes:
            writer.write(b"b")
            await writer.drain()
            return await asyncio.wait_for(reader.readexactly(1), 2.0)

        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await send_more()
        writer.close()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port)
        proxy.restore()
        assert await roundtrip(proxy.port) == b"ping"


async def test_blackhole_stalls_until_restored(echo: int) -> None:
    """In a black hole nothing comes back (a read times out); restored, new connections
    work again."""
    async with TcpProxy("127.0.0.1", echo) as proxy:
        proxy.blackhole()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"x")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        writer.close()
        proxy.restore()
        assert await roundtrip(proxy.port) == b"ping"
