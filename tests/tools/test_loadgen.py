"""The load generator's raw HTTP client keeps one connection alive per client; a request
cut short must not leave its answer there for the next request to read as its own."""

from __future__ import annotations

import asyncio

import pytest

from paycore.tools.loadgen import RawHttpClient


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request of a kept-alive connection in order, ``/slow`` after 0.4 s,
    with the path as the body."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/slow":
                await asyncio.sleep(0.4)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def test_a_request_that_timed_out_leaves_no_answer_for_the_next_one() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RawHttpClient("127.0.0.1", port, timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            await client.request("GET", "/slow")
        client.timeout = 2.0
        answer = await client.request("GET", "/fast")
        assert (answer.status, answer.body) == (200, b"/fast")
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
