"""Failure drills on a running cluster: a steady write load while something is broken.

The load is what a careful client does: every transfer has its own id and an
``Idempotency-Key``; an answer that does not say what happened (a timeout, a broken
connection, a 5xx, 409 ``idempotency_key_in_use``) is retried with the same key and
body until a definite answer or a deadline. Every definite answer is recorded, so the
drill can check afterwards that every transfer that got a 2xx is in the ledger (once:
a transfer id is unique), that nothing got a definite refusal it should not have, and
how long each shard took no writes.

``paycore cluster drill`` runs the three drills of the HA issue against the cluster of
a data directory and prints what it measured; the tests run them too.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from paycore.cluster.shardmap import ShardMap
from paycore.tools.local_cluster.control import LocalCluster

__all__ = ["DrillReport", "WriteLoad", "run_audit", "run_drill"]

_RETRY_DEADLINE = 90.0
_AMBIGUOUS_CODES = {"idempotency_key_in_use"}


@dataclass
class Ack:
    transfer_id: str
    shard: str
    amount: int
    done: float  # monotonic


@dataclass
class DrillReport:
    """What one drill saw and measured."""

    name: str
    acked: int = 0
    retried: int = 0  # requests that needed more than one try
    ambiguous_answers: int = 0  # tries that ended without a definite answer
    refused: list[str] = field(default_factory=list)  # definite 4xx: must stay empty
    given_up: list[str] = field(default_factory=list)  # no definite answer by the deadline
    missing: list[str] = field(default_factory=list)  # acked but not in the ledger
    write_gap_seconds: dict[str, float] = field(default_factory=dict)
    throughput: float = 0.0  # acked transfers per second over the run
    audit_ok: bool | None = None
    audit_output: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.refused or self.given_up or self.missing) and self.audit_ok is not False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "acked": self.acked,
            "retried": self.retried,
            "ambiguous_answers": self.ambiguous_answers,
            "refused": self.refused[:20],
            "given_up": self.given_up[:20],
            "missing": self.missing[:20],
            "write_gap_seconds": {k: round(v, 3) for k, v in self.write_gap_seconds.items()},
            "throughput_per_second": round(self.throughput, 1),
            "audit_ok": self.audit_ok,
            "notes": self.notes,
        }


class WriteLoad:
    """Transfers between accounts of each shard, from ``clients`` concurrent clients."""

    def __init__(
        self,
        url: str,
        shards: int,
        *,
        clients: int = 8,
        run_id: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.clients = clients
        self.run_id = run_id or f"d{int(time.time() * 1000) % 10**9}"
        self.map = ShardMap.even([f"s{k}" for k in range(shards)])
        self.accounts: dict[str, list[str]] = {}
        self.acks: list[Ack] = []
        self.report = DrillReport("load")
        self._ids = itertools.count()
        self.ended: float | None = None

    def _pick_accounts(self, per_shard: int = 4) -> None:
        names = (f"{self.run_id}-acct-{n}" for n in itertools.count())
        for shard in self.map.shards:
            self.accounts[shard] = []
        for name in names:
            shard = self.map.shard_for(name)
            if len(self.accounts[shard]) < per_shard:
                self.accounts[shard].append(name)
            if all(len(a) >= per_shard for a in self.accounts.values()):
                break

    async def setup(self, client: httpx.AsyncClient) -> None:
        self._pick_accounts()
        for accounts in self.accounts.values():
            for account in accounts:
                await self._post(
                    client,
                    "/v1/accounts",
                    {"id": account, "currency": "USD"},
                    key=f"{account}-open",
                )

    async def _post(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], *, key: str
    ) -> httpx.Response | None:
        """POST until a definite answer (None: none before the deadline)."""
        deadline = time.monotonic() + _RETRY_DEADLINE
        tries = 0
        while time.monotonic() < deadline:
            tries += 1
            try:
                answer = await client.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code < 500:
                code = _code(answer)
                if code not in _AMBIGUOUS_CODES:
                    if tries > 1:
                        self.report.retried += 1
                    return answer
            self.report.ambiguous_answers += 1
            await asyncio.sleep(min(0.05 * tries, 0.5))
        self.report.given_up.append(key)
        return None

    async def _client(self, client: httpx.AsyncClient, index: int, stop: asyncio.Event) -> None:
        # Each client writes to one shard, so that a shard's outage stalls only its own
        # clients and the other shards' write gaps show what the outage did to them.
        shards = list(self.accounts)
        shard = shards[index % len(shards)]
        while not stop.is_set():
            accounts = self.accounts[shard]
            n = next(self._ids)
            debit, credit = accounts[n % len(accounts)], accounts[(n + 1) % len(accounts)]
            transfer_id = f"{self.run_id}-t{n}"
            amount = 1 + n % 97
            body = {
                "id": transfer_id,
                "debit_account_id": debit,
                "credit_account_id": credit,
                "amount": amount,
                "currency": "USD",
            }
            answer = await self._post(client, "/v1/transfers", body, key=transfer_id)
            if answer is None:
                continue
            if answer.status_code in (200, 201):
                self.acks.append(Ack(transfer_id, shard, amount, time.monotonic()))
            else:
                self.report.refused.append(f"{transfer_id}: {answer.status_code} {_code(answer)}")

    async def run(self, during: Callable[[], Awaitable[None]]) -> DrillReport:
        """Load from start to end of ``during`` (plus its own settling), then verify."""
        limits = httpx.Limits(max_connections=self.clients * 2)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=10.0, limits=limits, headers=self.headers
        ) as client:
            await self.setup(client)
            stop = asyncio.Event()
            started = time.monotonic()
            workers = [
                asyncio.create_task(self._client(client, i, stop)) for i in range(self.clients)
            ]
            try:
                await during()
            finally:
                stop.set()
                outcomes = await asyncio.gather(*workers, return_exceptions=True)
            self.ended = time.monotonic()
            elapsed = self.ended - started
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            self.report.acked = len(self.acks)
            self.report.throughput = len(self.acks) / elapsed if elapsed else 0.0
            await self._verify(client)
        return self.report

    async def _verify(self, client: httpx.AsyncClient) -> None:
        semaphore = asyncio.Semaphore(16)

        async def check(ack: Ack) -> None:
            async with semaphore:
                for _ in range(20):
                    try:
                        answer = await client.get(f"/v1/transfers/{ack.transfer_id}")
                    except httpx.TransportError:
                        await asyncio.sleep(0.5)
                        continue
                    if answer.status_code == 200:
                        if answer.json().get("amount") != ack.amount:
                            self.report.missing.append(f"{ack.transfer_id}: changed amount")
                        return
                    if answer.status_code == 404:
                        self.report.missing.append(ack.transfer_id)
                        return
                    await asyncio.sleep(0.5)
                self.report.missing.append(f"{ack.transfer_id}: unreadable")

        await asyncio.gather(*(check(ack) for ack in self.acks))

    def gaps(self, around: float, shards: list[str] | None = None) -> dict[str, float]:
        """Per shard: the longest time without a write acknowledged, from a second
        before ``around`` on (a write answered just after the fault may have committed
        just before it, so the first ack after it does not end the outage)."""
        gaps = {}
        end = self.ended or time.monotonic()
        for shard in shards or list(self.accounts):
            times = sorted(a.done for a in self.acks if a.shard == shard and a.done >= around - 1)
            # The fault and the end of the load bound the gaps too: no ack after the
            # fault is a gap up to the end, not a small one before it.
            marks = sorted([around - 1, *times, end])
            gaps[shard] = max(b - a for a, b in itertools.pairwise(marks))
        return gaps


def _code(answer: httpx.Response) -> str | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def run_audit(cluster: LocalCluster) -> tuple[bool, str]:
    """``paycore audit`` over the cluster's shards: (clean?, its output)."""
    done = subprocess.run(  # noqa: S603 - our own command
        [
            sys.executable,
            "-m",
            "paycore",
            "audit",
            "--config",
            str(cluster.layout.node_config),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    return done.returncode == 0, done.stdout + done.stderr


async def run_drill(
    cluster: LocalCluster,
    kind: str,
    *,
    before: float = 3.0,
    after: float = 5.0,
    clients: int = 8,
    shard: int = 0,
) -> DrillReport:
    """One drill: ``primary`` (SIGKILL a shard's primary PostgreSQL),
    ``primary-machine`` (SIGKILL its Patroni too, as if the machine died), ``api-node``
    (SIGKILL an API node), ``redis`` (SIGKILL Redis; the supervisor starts it again)."""
    spec = cluster.spec
    load = WriteLoad(cluster.url, spec.shards, clients=clients, headers=cluster.headers)
    load.report.name = kind
    marks: dict[str, float] = {}

    async def during() -> None:
        await asyncio.sleep(before)
        marks["fault"] = time.monotonic()
        if kind == "primary":
            member, pid = cluster.kill_primary_postgres(shard)
            load.report.notes.append(f"killed s{shard} member {member} postmaster pid {pid}")
            await _wait_writes_resume(load, f"s{shard}", marks["fault"], 60.0)
        elif kind == "primary-machine":
            # The whole machine: Patroni and PostgreSQL die together and stay dead until
            # the standby took over (its leader key must expire first: Patroni's ttl).
            leader = cluster.primary_member(shard)
            if leader is None:
                raise RuntimeError(f"shard {shard} has no primary")
            name = f"s{shard}-pg{leader}"
            cluster.hold(name)
            try:
                cluster.kill(name)
                cluster.kill_primary_postgres(shard)
                load.report.notes.append(f"killed {name}: Patroni and PostgreSQL")
                await _wait_writes_resume(load, f"s{shard}", marks["fault"], 90.0)
            finally:
                cluster.release(name)
        elif kind == "api-node":
            pid = cluster.kill("api-1")
            load.report.notes.append(f"killed api-1 pid {pid}")
            new = await asyncio.to_thread(cluster.wait_restarted, "api-1", pid, 60.0)
            load.report.notes.append(f"api-1 back as pid {new}")
        elif kind == "redis":
            pid = cluster.kill("redis")
            load.report.notes.append(f"killed redis pid {pid}")
            new = await asyncio.to_thread(cluster.wait_restarted, "redis", pid, 60.0)
            load.report.notes.append(f"redis back as pid {new}")
        else:
            raise ValueError(f"unknown drill {kind!r}")
        await asyncio.sleep(after)

    report = await load.run(during)
    report.write_gap_seconds = load.gaps(marks["fault"])
    report.audit_ok, report.audit_output = await asyncio.to_thread(run_audit, cluster)
    return report


async def _wait_writes_resume(load: WriteLoad, shard: str, since: float, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(a.shard == shard and a.done > since + 0.5 for a in load.acks[-200:]):
            return
        await asyncio.sleep(0.1)
    load.report.notes.append(f"writes to {shard} did not resume within {limit:g} s")
    load.report.given_up.append(f"{shard}: no write acknowledged {limit:g} s after the fault")
