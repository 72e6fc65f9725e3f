"""HTTP load generator for ``paycore bench``: many clients, single transfers, one process.

It runs in its own process (``python -m paycore.tools.loadgen ...``) so that it does not
share the server's GIL, and prints one JSON object (a ``LoadResult``) on stdout.

Each client owns one keep-alive connection and sends ``POST /v1/transfers`` back to
back. Two clients are available: ``raw``, a minimal HTTP/1.1 client on asyncio
streams (what the numbers are taken with: it costs a few microseconds a request), and
``httpx`` (an ``AsyncClient`` per client, one pooled connection each), kept to show
how much a general-purpose client costs on the load generator's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "HttpResponse",
    "LoadResult",
    "RawHttpClient",
    "latency_summary",
    "main",
    "run_load",
]


class HttpResponse(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes


class RawHttpClient:
    """One HTTP/1.1 keep-alive connection; requests are sent one at a time.

    Only what a JSON API needs: ``Content-Length`` or chunked bodies, reconnects when
    the server closed the connection. Not for general use.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def for_url(cls, url: str, *, timeout: float = 30.0) -> RawHttpClient:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), self.timeout)
        except BaseException:
            # A request cut short (a timeout, a cancel, a bad answer) may leave its answer
            # on the kept-alive connection, where the next request would read it as its
            # own: the connection is dropped (closed now, not awaited: we may be cancelled).
            self._drop()
            raise

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    async def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None
    ) -> HttpResponse:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        for attempt in (0, 1):  # a kept-alive connection may have been closed: retry once
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(data)
                return await self._read_response(self._reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_response(self, reader: asyncio.StreamReader) -> HttpResponse:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(c[:-2] for c in chunks)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return HttpResponse(status, headers, body)


class LoadResult(msgspec.Struct):
    """What one load run measured (latencies in milliseconds)."""

    client: str
    clients: int
    duration_s: float
    requests: int
    ok: int
    statuses: dict[str, int]
    errors: dict[str, int]
    rate_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(
        cls,
        client: str,
        clients: int,
        *,
        seconds: float,
        latencies: Sequence[float],
        ok: int,
        statuses: dict[str, int],
        errors: dict[str, int],
    ) -> LoadResult:
        """A run that had ``ok`` answers in ``seconds`` (its rate) from ``latencies``."""
        return cls(
            client=client,
            clients=clients,
            duration_s=seconds,
            requests=len(latencies),
            ok=ok,
            statuses=statuses,
            errors=errors,
            rate_per_s=ok / seconds if seconds > 0 else 0.0,
            **latency_summary(latencies),
        )


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max, in milliseconds, of latencies given in seconds."""
    if not latencies_s:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(latencies_s)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": ordered[-1] * 1000,
    }


class _Workload:
    """Makes the transfer bodies: uniform over the accounts, or all to one hot account."""

    def __init__(self, accounts: int, hot: str | None, prefix: str, seed: int) -> None:
        self.accounts = accounts
        self.hot = hot
        self.prefix = prefix
        self.rnd = random.Random(seed)  # noqa: S311 - a workload, not a secret
        self.encoder = msgspec.json.Encoder()

    def body(self, client: int, seq: int) -> bytes:
        n = self.accounts
        debit = self.rnd.randrange(n)
        credit = self.hot or f"acct-{(debit + self.rnd.randrange(1, n)) % n}"
        return self.encoder.encode(
            {
                "id": f"{self.prefix}-{client}-{seq}",
                "debit_account_id": f"acct-{debit}",
                "credit_account_id": credit,
                "amount": self.rnd.randint(1, 1000),
                "currency": "USD",
            }
        )


Send = Callable[[bytes], Awaitable[int]]


async def _senders(
    url: str, client: str, clients: int, extra: dict[str, str]
) -> tuple[list[Send], Callable[[], Awaitable[None]]]:
    """One ``send(body) -> status`` per client, and how to close them all."""
    if client == "raw":
        raws = [RawHttpClient.for_url(url) for _ in range(clients)]

        def raw_sender(c: RawHttpClient) -> Send:
            async def send(body: bytes) -> int:
                return (await c.request("POST", "/v1/transfers", body, extra)).status

            return send

        async def close_raw() -> None:
            for c in raws:
                await c.close()

        return [raw_sender(c) for c in raws], close_raw
    if client == "httpx":
        import httpx  # noqa: PLC0415 - optional: only the test extra installs it

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        pool = [httpx.AsyncClient(base_url=url, limits=limits) for _ in range(clients)]
        headers = {"content-type": "application/json", **extra}

        def httpx_sender(c: httpx.AsyncClient) -> Send:
            async def send(body: bytes) -> int:
                return (await c.post("/v1/transfers", content=body, headers=headers)).status_code

            return send

        async def close_httpx() -> None:
            for c in pool:
                await c.aclose()

        return [httpx_sender(c) for c in pool], close_httpx
    raise ValueError(f"unknown client {client!r}")


async def run_load(
    url: str,
    *,
    clients: int,
    duration: float,
    accounts: int,
    hot: str | None = None,
    prefix: str = "http",
    client: str = "raw",
    warmup: float = 0.5,
    seed: int = 7,
    api_key: str | None = None,
) -> LoadResult:
    """Drive ``clients`` connections for ``warmup + duration`` seconds; measure the latter.

    ``api_key``: sent as ``Authorization: Bearer`` (the command line reads it from
    ``PAYCORE_API_KEY``, so that it never shows in a process listing)."""
    work = _Workload(accounts, hot, prefix, seed)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    extra = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    senders, close = await _senders(url, client, clients, extra)
    # The clock starts once every client exists (httpx clients take a while to build).
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def drive(index: int, send: Send) -> None:
        seq = 0
        while (now := time.perf_counter()) < stop_at:
            seq += 1
            body = work.body(index, seq)
            try:
                status = await send(body)
            except Exception as exc:  # noqa: BLE001 - counted, reported, never fatal
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            done = time.perf_counter()
            if now >= measure_from:
                latencies.append(done - now)
                key = str(status)
                statuses[key] = statuses.get(key, 0) + 1

    try:
        await asyncio.gather(*(drive(i, send) for i, send in enumerate(senders)))
    finally:
        await close()
    measured = time.perf_counter() - measure_from
    ok = sum(n for s, n in statuses.items() if s.startswith("2"))
    return LoadResult.of(
        client,
        clients,
        seconds=measured,
        latencies=latencies,
        ok=ok,
        statuses=statuses,
        errors=errors,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paycore.tools.loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--hot", default=None, help="credit every transfer to this account")
    parser.add_argument("--prefix", default="http", help="transfer id prefix (unique per run)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    coro = run_load(
        args.url,
        clients=args.clients,
        duration=args.duration,
        accounts=args.accounts,
        api_key=os.environ.get("PAYCORE_API_KEY") or None,
        hot=args.hot,
        prefix=args.prefix,
        client=args.client,
        warmup=args.warmup,
        seed=args.seed,
    )
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up of the load generator
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
