"""``paycore demo``: a wallet workload through the real HTTP API, checked promise by promise.

On a fresh data directory the demo creates wallets (``no_overdraft``), a merchant
(``no_overdraft``, ``history``), a funding and a settlement account, funds every wallet
in one batch, then lets ``--clients`` concurrent clients loose for ``--duration``
seconds on the Litestar app, called in-process through ASGI (no sockets, nothing to
install). The mix: wallet-to-wallet transfers, payments to the merchant, top-ups,
holds that are captured in full or in part, voided or left to expire, retries under
an ``Idempotency-Key`` (sequential, concurrent, and with a changed body), retries of
a transfer id, deliberate overdrafts, balance reads and malformed requests.

The demo keeps its own model of every acknowledged effect. At the end it waits for
the expiring holds, runs the cross-shard act (``cross_shard_act``: a hold between wallets on
two shards captured in part, another voided, a linked chain over three shards through a
wallet that starts empty, and a chain that fails whole), pays the merchant out with a
``balancing`` transfer and compares each account's counters with the model.

Then the payments act (``payments_act``; skipped with ``--no-payments``): three
simulated processors (``paycore acquirer-sim`` child processes, spawned while the
ledger act settles and stopped at the end whatever happens), card payments, captures,
refunds, payouts and top-ups through the same API (a new node on the same data
directory, configured with the processors), and one processor taken down midway and
brought back: its breaker opens, the traffic shifts, and it closes again through
half-open probes.

Then the reconciliation act (``recon_act``): the day's settlement report of each
processor, fetched from it, imported by the operator through the admin API (one with
injected anomalies, each found and booked, checked against the report's clean twin),
and a USD wallet paying a EUR merchant through an FX conversion.

Last, the whole ledger is audited, the data directory's files are scanned for the
card numbers the act used, and the demo prints throughput, latency percentiles, the
payments story and one line per promise. Any broken promise exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import Settings, shard_specs
from paycore.ledger.tenancy import internal_account_id
from paycore.money import format_minor
from paycore.ops.audit import ClusterAuditReport, audit_cluster, print_cluster_report
from paycore.storage.store import Store
from paycore.tools.demo.asgi_client import DEMO_TENANT, AsgiClient, Json, json_of
from paycore.tools.demo.cross_shard_act import CrossShardAct, CrossShardReport, print_act
from paycore.tools.demo.fx_act import run_fx_act
from paycore.tools.demo.payments_act import (
    Fleet,
    PaymentsAct,
    PaymentsReport,
    card_numbers,
    payment_settings,
    print_report,
    scan_for_cards,
)
from paycore.tools.demo.promises import OpStats, Promise, op_stats
from paycore.tools.demo.recon_act import ReconReport, print_recon, run_recon_act
from paycore.tools.loadgen import HttpResponse, latency_summary

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

CURRENCY = "USD"
FUNDING = "demo.funding"
SETTLEMENT = "demo.settlement"
MERCHANT = "demo.merchant"
OVERDRAFT = 10**13  # more than all the money the demo ever creates: must be refused
EXPIRING_TIMEOUT = 1  # seconds; holds left to expire
HOLD_TIMEOUT = 60  # seconds; holds the client resolves itself
MAINTENANCE_INTERVAL = 0.2
DEMO_SHARDS = 4  # the embedded layout split over four SQLite files: the sharded ledger

# Operation mix (weights); see the module docstring.
_MIX: dict[str, int] = {
    "p2p": 27,
    "payment": 24,
    "topup": 4,
    "hold": 16,
    "idempotent": 10,
    "id_retry": 3,
    "overdraft": 4,
    "read": 9,
    "invalid": 3,
}


class DemoOptions(msgspec.Struct, kw_only=True):
    """What ``paycore demo`` was asked for."""

    data_dir: Path | None = None
    wallets: int = 2000
    clients: int = 64
    duration: float = 10.0
    synchronous: str = "FULL"
    seed: int | None = None
    json_path: Path | None = None
    payments: bool = True  # the payments act (see payments_act)
    payments_duration: float = 14.0
    payment_clients: int = 16

    def check(self) -> None:
        """Raise ``ValueError`` for options the demo cannot run with."""
        if self.wallets < 2:
            raise ValueError("the demo needs at least 2 wallets")
        if self.payments and (self.payments_duration < 3 or self.payment_clients < 1):
            raise ValueError("the payments act needs at least 3 seconds and 1 client")


class DemoResult(msgspec.Struct):
    """Everything the demo measured and checked (written by ``--json``)."""

    ok: bool
    data_dir: str
    wallets: int
    clients: int
    duration_s: float
    requests: int
    requests_per_s: float
    transfers: int
    transfers_per_s: float
    latency: dict[str, float]
    operations: list[OpStats]
    promises: list[Promise]
    audit: ClusterAuditReport | None
    seconds_total: float
    shards: int = 1
    cross_shard_transfers: int = 0
    cross_shard_act: CrossShardReport | None = None
    payments: PaymentsReport | None = None
    reconciliation: ReconReport | None = None


# -- the workload -------------------------------------------------------------------------------


class _Model:
    """Expected counters of every account, from acknowledged answers only."""

    def __init__(self) -> None:
        self.counters: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # dp dpo cp cpo

    def posted(self, debit: str, credit: str, amount: int) -> None:
        self.counters[debit][1] += amount
        self.counters[credit][3] += amount

    def held(self, debit: str, credit: str, amount: int) -> None:
        self.counters[debit][0] += amount
        self.counters[credit][2] += amount

    def released(self, debit: str, credit: str, amount: int) -> None:
        self.counters[debit][0] -= amount
        self.counters[credit][2] -= amount


class _Expiring(msgspec.Struct):
    hold_id: str
    debit: str
    credit: str
    amount: int
    due: float  # monotonic time after which the hold must have expired


_encode = msgspec.json.Encoder().encode


def _label(response: HttpResponse) -> str:
    label = str(response.status)
    if response.status >= 400:
        label += f" {json_of(response).get('code', '?')}"
    if response.headers.get("idempotent-replayed") == "true":
        label += " (replayed)"
    return label


class _Demo:
    def __init__(
        self, client: AsgiClient, options: DemoOptions, seed: int, store: ShardedStore
    ) -> None:
        self.client = client
        self.options = options
        self.seed = seed
        self.wallets = [f"demo.w{i:05d}" for i in range(options.wallets)]
        # The workload's holds go to the merchant from wallets on its shard; holds between
        # shards are the cross-shard act's (cross_shard_act). The store places an account by
        # its id there: the demo tenant's namespace holds it.
        home = store.shard_for(internal_account_id(DEMO_TENANT, MERCHANT))
        self.hold_wallets = [
            w for w in self.wallets if store.shard_for(internal_account_id(DEMO_TENANT, w)) == home
        ]
        self.shard_for: Callable[[str], str] = lambda account: store.shard_for(
            internal_account_id(DEMO_TENANT, account)
        )
        self.cross_shard = 0  # acknowledged transfers between accounts on two shards
        self.in_flight: list[str] = []  # of which answered in_flight (a fault's answer)
        self.model = _Model()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.expiring: list[_Expiring] = []
        self.holds: dict[str, int] = {}  # acknowledged hold id -> amount
        self.transfers = 0  # acknowledged new transfers (201)
        self.requests = 0
        self.p_audit = Promise("the ledger audits clean (conservation, replay, limits, holds)")
        self.p_overdraft = Promise("deliberate overdrafts are refused with insufficient_funds")
        self.p_balance = Promise("no wallet is ever read below zero")
        self.p_idem = Promise("a retry replays the first answer; a changed body is refused")
        self.p_durable = Promise("every acknowledged effect is in the ledger, exactly once")
        self.p_holds = Promise("holds are captured, voided or expired exactly as asked")
        self.p_errors = Promise("bad input gets a precise problem; no answer is a 5xx")
        self.p_cross = Promise("cross-shard transfers are answered posted by the request itself")
        self.p_act = Promise("holds and linked chains across shards behave as on one shard")
        self.p_fx = Promise("a wallet pays in another currency at its quote, used once")

    # -- plumbing -------------------------------------------------------------------------

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Json | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        raw = body if isinstance(body, bytes | None) else _encode(body)
        t0 = time.perf_counter()
        response = await self.client.request(method, path, raw, headers)
        self.latencies[kind].append(time.perf_counter() - t0)
        self.requests += 1
        self.outcomes[kind][_label(response)] += 1
        self.p_errors.check(
            response.status < 500, f"{method} {path} -> {response.status} {response.body[:200]!r}"
        )
        return response

    def acknowledge(self, response: HttpResponse) -> Json | None:
        """Book a new transfer (201, not a replay) in the model; its body when it was one."""
        if response.status != 201 or response.headers.get("idempotent-replayed") == "true":
            return None
        t = json_of(response)
        self.transfers += 1
        debit, credit, amount = t["debit_account_id"], t["credit_account_id"], t["amount"]
        if self.shard_for(debit) != self.shard_for(credit):
            self.cross(t["id"], t.get("status"))
        if t["flags"]["pending"]:
            self.model.held(debit, credit, amount)
        elif t["pending_id"] is not None:
            hold = self.holds.get(t["pending_id"])
            if hold is not None:
                self.model.released(debit, credit, hold)
            if t["flags"]["post_pending"]:
                self.model.posted(debit, credit, amount)
        else:
            self.model.posted(debit, credit, amount)
        if t["flags"]["pending"]:
            self.holds[t["id"]] = amount
        return t

    def cross(self, transfer_id: str, status: str | None) -> None:
        """A cross-shard transfer was acknowledged: its request settled it (no fault here),
        so it answers as on one shard; ``in_flight`` is left to the relay, then checked."""
        self.cross_shard += 1
        self.p_cross.check(status != "in_flight", f"{transfer_id}: answered in_flight")
        if status == "in_flight":  # booked as posted; settle_in_flight checks it
            self.in_flight.append(transfer_id)

    def expect_refusal(self, response: HttpResponse, allowed: set[str]) -> bool:
        """A 201, or a refusal with one of the ``allowed`` codes; else a broken promise."""
        if response.status in (200, 201):
            return True
        code = json_of(response).get("code")
        ok = code in allowed
        self.p_errors.check(ok, f"unexpected {response.status} {code}")
        return ok

    # -- setup --------------------------------------------------------------------------------

    async def setup(self, progress: Progress) -> None:
        accounts: list[Json] = [
            {"id": FUNDING, "currency": CURRENCY, "metadata": {"role": "funding"}},
            {"id": SETTLEMENT, "currency": CURRENCY, "metadata": {"role": "settlement"}},
            {
                "id": MERCHANT,
                "currency": CURRENCY,
                "flags": {"no_overdraft": True, "history": True},
                "metadata": {"role": "merchant", "name": "Demo Coffee"},
            },
        ] + [{"id": w, "currency": CURRENCY, "flags": {"no_overdraft": True}} for w in self.wallets]
        task = progress.add_task("creating accounts", total=len(accounts), ops="")
        queue = list(reversed(accounts))

        async def creator() -> None:
            while queue:
                response = await self.call("setup", "POST", "/v1/accounts", queue.pop())
                if response.status != 201:
                    raise RuntimeError(f"account creation failed: {_label(response)}")
                progress.advance(task)

        await asyncio.gather(*(creator() for _ in range(min(32, self.options.clients))))
        rnd = random.Random(self.seed)
        funding: list[Json] = [
            {
                "id": f"fund-{w}",
                "debit_account_id": FUNDING,
                "credit_account_id": w,
                "amount": rnd.randrange(5_000, 50_000),
                "currency": CURRENCY,
                "metadata": {"reason": "initial funding"},
            }
            for w in self.wallets
        ]
        task = progress.add_task("funding wallets", total=len(funding), ops="")
        for start in range(0, len(funding), 8189):
            chunk = funding[start : start + 8189]
            response = await self.call("setup", "POST", "/v1/transfers/batch", {"transfers": chunk})
            results = json_of(response).get("results", [])
            if response.status != 200 or any("error" in r for r in results):
                raise RuntimeError(f"funding failed: {response.body[:300]!r}")
            for item, result in zip(chunk, results, strict=True):
                self.model.posted(FUNDING, item["credit_account_id"], item["amount"])
                self.transfers += 1
                if self.shard_for(FUNDING) != self.shard_for(item["credit_account_id"]):
                    self.cross(item["id"], result.get("status"))
            progress.advance(task, len(chunk))

    # -- one client ---------------------------------------------------------------------------

    async def client_loop(self, index: int, stop_at: float) -> None:
        rnd = random.Random(self.seed * 1_000 + index)
        kinds, weights = list(_MIX), list(_MIX.values())
        seq = 0
        while time.monotonic() < stop_at:
            seq += 1
            kind = rnd.choices(kinds, weights)[0]
            op: Callable[[random.Random, str], Awaitable[None]] = getattr(self, f"op_{kind}")
            await op(rnd, f"c{index}-{seq}")

    def two_wallets(self, rnd: random.Random) -> tuple[str, str]:
        a, b = rnd.sample(self.wallets, 2)
        return a, b

    def transfer_body(self, tid: str, debit: str, credit: str, amount: int, **extra: Any) -> Json:
        body: Json = {
            "id": tid,
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            "currency": CURRENCY,
        }
        body.update(extra)
        return body

    async def op_p2p(self, rnd: random.Random, tag: str) -> None:
        a, b = self.two_wallets(rnd)
        body = self.transfer_body(f"p2p-{tag}", a, b, rnd.randrange(100, 3_000))
        response = await self.call("p2p", "POST", "/v1/transfers", body)
        self.expect_refusal(response, {"insufficient_funds"})
        self.acknowledge(response)

    async def op_payment(self, rnd: random.Random, tag: str) -> None:
        wallet = rnd.choice(self.wallets)
        body = self.transfer_body(f"pay-{tag}", wallet, MERCHANT, rnd.randrange(100, 5_000))
        response = await self.call("payment", "POST", "/v1/transfers", body)
        self.expect_refusal(response, {"insufficient_funds"})
        self.acknowledge(response)

    async def op_topup(self, rnd: random.Random, tag: str) -> None:
        body = self.transfer_body(
            f"top-{tag}", FUNDING, rnd.choice(self.wallets), rnd.randrange(1_000, 20_000)
        )
        response = await self.call("topup", "POST", "/v1/transfers", body)
        self.p_errors.check(response.status == 201, f"top-up -> {_label(response)}")
        self.acknowledge(response)

    async def op_hold(self, rnd: random.Random, tag: str) -> None:
        if not self.hold_wallets:
            return
        wallet = rnd.choice(self.hold_wallets)
        amount = rnd.randrange(500, 5_000)
        fate = rnd.choices(("full", "partial", "void", "expire"), (30, 25, 25, 20))[0]
        timeout = EXPIRING_TIMEOUT if fate == "expire" else HOLD_TIMEOUT
        hold_id = f"hold-{tag}"
        body = self.transfer_body(
            hold_id, wallet, MERCHANT, amount, pending=True, timeout_seconds=timeout
        )
        created = time.monotonic()
        response = await self.call("hold", "POST", "/v1/transfers", body)
        self.expect_refusal(response, {"insufficient_funds"})
        hold = self.acknowledge(response)
        if hold is None:
            return
        self.p_holds.check(
            hold["status"] == "pending" and hold["amount"] == amount,
            f"{hold_id}: created as {hold['status']} {hold['amount']}",
        )
        if fate == "expire":
            self.expiring.append(
                _Expiring(hold_id, wallet, MERCHANT, amount, created + timeout + 0.05)
            )
            return
        path = f"/v1/transfers/{hold_id}/{'void' if fate == 'void' else 'post'}"
        capture = rnd.randrange(1, amount) if fate == "partial" else None
        response = await self.call(
            f"hold_{fate}", "POST", path, {"amount": capture} if capture else None
        )
        done = self.acknowledge(response)
        want_status = "voided" if fate == "void" else "posted"
        want_amount = capture or amount
        self.p_holds.check(
            done is not None and done["status"] == want_status and done["amount"] == want_amount,
            f"{hold_id} {fate}: {_label(response)} {done and (done['status'], done['amount'])}",
        )

    async def op_idempotent(self, rnd: random.Random, tag: str) -> None:
        a, b = self.two_wallets(rnd)
        key = f"idem-{tag}-{self.seed}"
        body = self.transfer_body(f"idem-{tag}", a, b, rnd.randrange(100, 3_000))
        headers = {"Idempotency-Key": key}
        style = rnd.choices(("sequential", "concurrent", "changed"), (60, 25, 15))[0]
        if style == "concurrent":
            first, second = await asyncio.gather(
                self.call("idempotent", "POST", "/v1/transfers", body, headers),
                self.call("idempotent", "POST", "/v1/transfers", body, headers),
            )
            if first.headers.get("idempotent-replayed") == "true":
                first, second = second, first
            in_use = json_of(second).get("code") == "idempotency_key_in_use"
            if in_use:  # the second came while the first ran: retry it now
                second = await self.call("idempotent", "POST", "/v1/transfers", body, headers)
        else:
            first = await self.call("idempotent", "POST", "/v1/transfers", body, headers)
            changed = dict(body, amount=body["amount"] + 1) if style == "changed" else body
            second = await self.call("idempotent", "POST", "/v1/transfers", changed, headers)
        self.expect_refusal(first, {"insufficient_funds"})
        self.acknowledge(first)
        if style == "changed":
            code = json_of(second).get("code")
            self.p_idem.check(
                second.status == 409 and code == "idempotency_key_reused",
                f"{key}: changed body -> {_label(second)}",
            )
            return
        self.p_idem.check(
            second.headers.get("idempotent-replayed") == "true"
            and (second.status, second.body) == (first.status, first.body),
            f"{key}: first {_label(first)}, retry {_label(second)} "
            f"replayed={second.headers.get('idempotent-replayed')}",
        )

    async def op_id_retry(self, rnd: random.Random, tag: str) -> None:
        a, b = self.two_wallets(rnd)
        body = self.transfer_body(f"retry-{tag}", a, b, rnd.randrange(100, 3_000))
        first = await self.call("id_retry", "POST", "/v1/transfers", body)
        self.expect_refusal(first, {"insufficient_funds"})
        if json_of(first).get("code") == "insufficient_funds":
            # The id keeps its refusal, whatever the wallet holds by now.
            again = await self.call("id_retry", "POST", "/v1/transfers", body)
            self.p_idem.check(
                (again.status, json_of(again)) == (first.status, json_of(first)),
                f"{body['id']}: refused, same id again -> {_label(again)}",
            )
            return
        if self.acknowledge(first) is None:
            return
        again = await self.call("id_retry", "POST", "/v1/transfers", body)
        original, repeated = json_of(first), json_of(again)
        self.p_idem.check(
            again.status == 200 and repeated.get("timestamp") == original["timestamp"],
            f"{body['id']}: same id again -> {_label(again)}",
        )
        changed = await self.call(
            "id_retry", "POST", "/v1/transfers", dict(body, amount=body["amount"] + 1)
        )
        self.p_idem.check(
            json_of(changed).get("code") == "transfer_exists_with_different_fields",
            f"{body['id']}: same id, other amount -> {_label(changed)}",
        )

    async def op_overdraft(self, rnd: random.Random, tag: str) -> None:
        a, b = self.two_wallets(rnd)
        pending = rnd.random() < 0.5 and bool(self.hold_wallets)
        if pending:  # the workload's holds: see hold_wallets
            a, b = rnd.choice(self.hold_wallets), MERCHANT
        extra: Json = {"pending": True, "timeout_seconds": HOLD_TIMEOUT} if pending else {}
        body = self.transfer_body(f"over-{tag}", a, b, OVERDRAFT, **extra)
        response = await self.call("overdraft", "POST", "/v1/transfers", body)
        self.p_overdraft.check(
            response.status == 409 and json_of(response).get("code") == "insufficient_funds",
            f"{body['id']} ({'hold' if pending else 'transfer'}) -> {_label(response)}",
        )
        self.acknowledge(response)  # a broken promise must still be booked to be audited

    async def op_read(self, rnd: random.Random, tag: str) -> None:
        wallet = rnd.choice(self.wallets)
        response = await self.call("read", "GET", f"/v1/accounts/{wallet}")
        available = json_of(response).get("balance", {}).get("available")
        self.p_balance.check(
            response.status == 200 and isinstance(available, int) and available >= 0,
            f"{wallet}: {_label(response)} available={available}",
        )

    async def op_invalid(self, rnd: random.Random, tag: str) -> None:
        a, b = self.two_wallets(rnd)
        good = self.transfer_body(f"bad-{tag}", a, b, 100)
        cases: list[tuple[Json | bytes, int, str]] = [
            (dict(good, amount=12.5), 422, "invalid_request"),
            (dict(good, amount=0), 422, "invalid_request"),
            (dict(good, amount="100"), 422, "invalid_request"),
            (dict(good, currency="XXX"), 422, "invalid_request"),
            (dict(good, pendng=True), 422, "invalid_request"),
            (b'{"id": "x", "amount": ', 422, "invalid_request"),
            (dict(good, credit_account_id="demo.nobody"), 404, "account_not_found"),
            (dict(good, credit_account_id=a), 422, "accounts_must_be_different"),
            (dict(good, credit_account_id=FUNDING, currency="EUR"), 422, "currency_mismatch"),
        ]
        body, status, code = rnd.choice(cases)
        response = await self.call("invalid", "POST", "/v1/transfers", body)
        problem = response.headers.get("content-type", "").startswith("application/problem+json")
        self.p_errors.check(
            response.status == status and problem and json_of(response).get("code") == code,
            f"expected {status} {code}, got {_label(response)}",
        )
        self.acknowledge(response)

    async def workload(self, progress: Progress) -> tuple[float, int, int]:
        """Run the clients for the duration: ``(seconds, requests, new transfers)``."""
        requests_before, transfers_before = self.requests, self.transfers
        for latencies in self.latencies.values():
            latencies.clear()
        duration = self.options.duration
        t0 = time.monotonic()
        stop_at = t0 + duration
        task = progress.add_task("workload", total=duration, ops="")
        ticker = asyncio.create_task(_tick(progress, task, self, t0, stop_at))
        try:
            await asyncio.gather(
                *(self.client_loop(i, stop_at) for i in range(self.options.clients))
            )
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        progress.update(task, completed=duration)
        elapsed = time.monotonic() - t0
        return elapsed, self.requests - requests_before, self.transfers - transfers_before

    # -- the end ------------------------------------------------------------------------------

    async def settle_expiring(self, progress: Progress) -> None:
        """Wait for the holds left to expire; each must end ``expired``, once."""
        if not self.expiring:
            return
        task = progress.add_task("waiting for holds to expire", total=len(self.expiring), ops="")
        pending = list(self.expiring)
        deadline = max(e.due for e in pending) + 10 * MAINTENANCE_INTERVAL + 5.0
        while pending and time.monotonic() < deadline:
            due = [e for e in pending if e.due <= time.monotonic()]
            if not due:
                await asyncio.sleep(0.05)
                continue
            statuses = await asyncio.gather(
                *(self.call("hold_expire", "GET", f"/v1/transfers/{e.hold_id}") for e in due)
            )
            for e, response in zip(due, statuses, strict=True):
                status = json_of(response).get("status")
                if status == "expired":
                    self.model.released(e.debit, e.credit, e.amount)
                    pending.remove(e)
                    progress.advance(task)
                else:
                    self.p_holds.check(
                        status == "pending", f"{e.hold_id}: left to expire, became {status}"
                    )
            if pending:
                await asyncio.sleep(MAINTENANCE_INTERVAL / 2)
        for e in pending:
            self.p_holds.check(False, f"{e.hold_id}: still not expired long after its timeout")
        for e in self.expiring:
            if e not in pending:
                self.p_holds.check(True)
        for e in self.expiring[:20]:  # capturing an expired hold must be refused
            response = await self.call("hold_expire", "POST", f"/v1/transfers/{e.hold_id}/post")
            self.p_holds.check(
                json_of(response).get("code") == "pending_transfer_expired",
                f"{e.hold_id}: post after expiry -> {_label(response)}",
            )

    async def payout(self) -> None:
        """Pay the merchant's whole available balance out with one ``balancing`` transfer."""
        c = self.model.counters[MERCHANT]
        expected = c[3] - c[1] - c[0]
        if expected <= 0:
            return
        body = self.transfer_body(
            "payout-1", MERCHANT, SETTLEMENT, 2**62, balancing=True, metadata={"kind": "payout"}
        )
        response = await self.call("payout", "POST", "/v1/transfers", body)
        t = self.acknowledge(response)
        self.p_holds.check(
            t is not None and t["amount"] == expected,
            f"balancing payout moved {t and t['amount']}, available was {expected}",
        )

    async def settle_in_flight(self) -> None:
        """Every cross-shard transfer answered ``in_flight`` must end ``posted``."""
        pending = list(dict.fromkeys(self.in_flight))
        self.in_flight.clear()
        deadline = time.monotonic() + 30.0
        while pending and time.monotonic() < deadline:
            responses = await asyncio.gather(
                *(self.call("settle", "GET", f"/v1/transfers/{i}") for i in pending[:256])
            )
            for transfer_id, response in zip(pending[:256], responses, strict=True):
                status = json_of(response).get("status")
                if status != "in_flight":
                    self.p_cross.check(status == "posted", f"{transfer_id}: settled as {status}")
                    pending.remove(transfer_id)
            if pending:
                await asyncio.sleep(0.05)
        for transfer_id in pending:
            self.p_cross.check(False, f"{transfer_id}: still in flight after 30s")

    async def compare_with_ledger(self, store: Store) -> None:
        ids = list(
            dict.fromkeys([FUNDING, SETTLEMENT, MERCHANT, *self.wallets, *self.model.counters])
        )
        accounts = await store.get_accounts([internal_account_id(DEMO_TENANT, i) for i in ids])
        for account_id in ids:
            a = accounts.get(internal_account_id(DEMO_TENANT, account_id))
            got = (
                None
                if a is None
                else [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
            )
            want = self.model.counters[account_id]
            self.p_durable.check(got == want, f"{account_id}: ledger {got}, acknowledged {want}")

    def promises(self) -> list[Promise]:
        return [
            self.p_audit,
            self.p_durable,
            self.p_overdraft,
            self.p_balance,
            self.p_idem,
            self.p_holds,
            self.p_cross,
            self.p_act,
            self.p_fx,
            self.p_errors,
        ]


# -- running it ---------------------------------------------------------------------------------


async def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; 0 when every promise held, 1 otherwise."""
    started = time.perf_counter()
    options.check()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    data_dir = options.data_dir or Path("paycore-data") / f"demo-{stamp}"
    if any(data_dir.glob("shard-*.sqlite3")):
        console.print(f"[red]{data_dir} already holds a ledger; the demo needs a fresh one[/]")
        return 2
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    settings = Settings(
        data_dir=str(data_dir),
        # The demo shows the ledger sharded (its cross-shard act needs several shards):
        # the embedded layout with four SQLite files, as ``PAYCORE_EMBEDDED_SHARDS=4``.
        embedded_shards=DEMO_SHARDS,
        synchronous=options.synchronous.upper(),
        maintenance_interval_seconds=MAINTENANCE_INTERVAL,
        # The workload is one caller (this process) at thousands of requests a second.
        rate_limit_per_second=0.0,
    )
    store = build_store(settings)
    from paycore.api.app import create_app  # noqa: PLC0415 - the API is the heavy import

    app = create_app(store, settings)
    _announce(options, settings, seed, console)
    audit: ClusterAuditReport | None = None
    act: CrossShardReport | None = None
    fleet: Fleet | None = None
    payments: PaymentsReport | None = None
    recon: ReconReport | None = None
    more_promises: list[Promise] = []
    try:
        async with AsgiClient(app) as client:
            await client.use_key(store)
            demo = _Demo(client, options, seed, store)
            with _progress(console) as progress:
                await demo.setup(progress)
                elapsed, requests, transfers = await demo.workload(progress)
                if options.payments:
                    # The processors boot while this act settles (mostly waiting).
                    fleet = Fleet.spawn(data_dir / "acquirers", seed)
                await demo.settle_expiring(progress)
            await demo.settle_in_flight()
            act = await _cross_shard_act(client, store, demo)
            console.print(await run_fx_act(client, demo.p_fx))
            await demo.payout()
            await demo.settle_in_flight()
            await demo.compare_with_ledger(store)
            if fleet is None:
                audit = await _audit(store, demo.p_audit, console)
        if fleet is not None:
            payments, audit, recon, more_promises = await _payments_act(
                options, settings, seed=seed, fleet=fleet, p_audit=demo.p_audit, console=console
            )
    finally:
        if fleet is not None:
            await fleet.aclose()
            fleet.stop()
    workload_latencies = [x for k, v in demo.latencies.items() if k != "setup" for x in v]
    promises = demo.promises() + more_promises
    result = DemoResult(
        ok=all(p.broken == 0 for p in promises),
        data_dir=str(data_dir),
        wallets=options.wallets,
        clients=options.clients,
        duration_s=elapsed,
        requests=requests,
        requests_per_s=requests / elapsed,
        transfers=transfers,
        transfers_per_s=transfers / elapsed,
        latency=latency_summary(workload_latencies),
        operations=op_stats(demo.latencies, demo.outcomes),
        promises=promises,
        audit=audit,
        seconds_total=time.perf_counter() - started,
        shards=len(store.shards),
        cross_shard_transfers=demo.cross_shard,
        cross_shard_act=act,
        payments=payments,
        reconciliation=recon,
    )
    _print(result, console)
    _write_json(result, options.json_path, console)
    return 0 if result.ok else 1


def _write_json(result: DemoResult, path: Path | None, console: Console) -> None:
    if path is not None:
        path.write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
        console.print(f"wrote {path}")


def _announce(options: DemoOptions, settings: Settings, seed: int, console: Console) -> None:
    act = (
        f"; then payments through 3 simulated processors for {options.payments_duration:g}s"
        if options.payments
        else ""
    )
    console.print(
        f"[bold]paycore demo[/]: {options.wallets:,} wallets, {options.clients} clients, "
        f"{options.duration:g}s, seed {seed}, {len(shard_specs(settings))} shards in "
        f"{settings.data_dir} (synchronous={settings.synchronous}; API called in-process){act}"
    )
    # The in-process app is reachable by no one: its "no API key" warning does not apply.
    logging.getLogger("paycore.api.app").setLevel(logging.ERROR)


async def _cross_shard_act(
    client: AsgiClient, store: ShardedStore, demo: _Demo
) -> CrossShardReport:
    """Holds and linked chains between wallets on different shards (``cross_shard_act``)."""
    act = CrossShardAct(
        client,
        shards=list(store.shards),
        shard_for=demo.shard_for,  # by the id the store keeps (the demo tenant's)
        funding=FUNDING,
        currency=CURRENCY,
        book=demo.model,
        promise=demo.p_act,
    )
    return await act.run()


async def _audit(store: ShardedStore, promise: Promise, console: Console) -> ClusterAuditReport:
    """Audit every shard and the cluster; the findings go into ``promise``."""
    with console.status("auditing the ledger..."):
        audit = await audit_cluster(store.shards)
    replayed = sum(r.transfers for r in audit.shards.values())
    found = [f"{v.kind}: {v.detail}" for r in audit.shards.values() for v in r.violations]
    found += [f"{v.kind}: {v.detail}" for v in audit.violations]
    promise.checks = max(1, replayed)
    promise.broken = sum(r.violation_count for r in audit.shards.values()) + sum(
        1 for v in audit.violations if v.kind != "shard_violation"
    )
    promise.examples = found[:5]
    return audit


async def _payments_act(
    options: DemoOptions,
    settings: Settings,
    *,
    seed: int,
    fleet: Fleet,
    p_audit: Promise,
    console: Console,
) -> tuple[PaymentsReport, ClusterAuditReport, ReconReport, list[Promise]]:
    """The payments act on a new node over the same data directory, configured with the
    simulated processors; then the audit of everything, and the scan for card numbers
    once that node has stopped (its databases closed)."""
    from paycore.api.app import create_app  # noqa: PLC0415
    from paycore.payments.service import build_payment_service  # noqa: PLC0415

    # The node's warnings (timeouts, retries, breaker changes) are the story: the act
    # prints it as a timeline instead.
    with _quiet("paycore.payments", "paycore.workers", "stamina"):
        lap = _Laps()
        with console.status("starting three simulated processors (paycore acquirer-sim)..."):
            urls = await fleet.ready()
        lap("processors_ready")
        duration = options.payments_duration
        settings = payment_settings(settings, urls, duration=duration, seed=seed)
        store = build_store(settings)
        service = build_payment_service(store, settings)
        app = create_app(store, settings, payments=service)
        async with AsgiClient(app) as client:
            await client.use_key(store)
            act = PaymentsAct(
                client,
                service,
                fleet,
                duration=duration,
                clients=options.payment_clients,
                seed=seed,
            )
            await act.setup()
            lap("setup")
            with _progress(console) as progress:
                await act.run(progress)
                elapsed = lap("workload")
                await act.settle(progress)
                lap("settle")
            with console.status("checking every payment against the ledger and the processors..."):
                verified = await act.verify(store)
            act.judge_outage()
            lap("verify")
            with console.status("reconciling the day's settlement reports..."):
                recon, recon_promises = await _recon_act(client, store, fleet, urls, seed)
            lap("reconcile")
            audit = await _audit(store, p_audit, console)
            lap("audit")
        p_cards = Promise("no card number in the data directory (databases, WAL, logs)")
        numbers = card_numbers(act)
        files, found = scan_for_cards(Path(settings.data_dir), numbers)
        p_cards.checks, p_cards.broken, p_cards.examples = (
            files * len(numbers),
            len(found),
            found[:5],
        )
        lap("card_scan")
        act.phases = lap.laps
        return (
            act.report(elapsed, verified),
            audit,
            recon,
            [*act.promises(), *recon_promises, p_cards],
        )


async def _recon_act(
    client: AsgiClient, store: Store, fleet: Fleet, urls: dict[str, str], seed: int
) -> tuple[ReconReport, list[Promise]]:
    """The day's settlement reports reconciled by the operator, then a wallet paying in
    euros (``recon_act``)."""
    from paycore.api.auth import ApiKeys, Scope  # noqa: PLC0415

    key = await ApiKeys(store).create("default", frozenset({Scope.ADMIN}), name="demo operator")
    promises = [
        Promise(
            "settlement reports reconcile: clean ones match line for line, every injected "
            "anomaly is queued and booked, none invented; psp: drift 0"
        ),
        Promise("a settlement report imported again changes nothing"),
        Promise("a USD wallet pays a EUR merchant at exactly the quoted amounts"),
    ]
    report = await run_recon_act(
        client,
        store,
        operator={"Authorization": f"Bearer {key.token}"},
        http=fleet.http,
        urls=urls,
        seed=seed,
        promise=promises[0],
        p_again=promises[1],
        p_fx=promises[2],
    )
    return report, promises


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Only the errors of the loggers ``names`` while the block runs."""
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class _Laps:
    """Wall time between calls, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def __call__(self, name: str) -> float:
        """Record the time since the last lap as ``name``; that time."""
        now = time.monotonic()
        seconds, self._last = now - self._last, now
        self.laps[name] = round(seconds, 3)
        return seconds


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[ops]}"),
        console=console,
        transient=False,
    )


async def _tick(progress: Progress, task: Any, demo: _Demo, t0: float, stop_at: float) -> None:
    start_requests, start_transfers = demo.requests, demo.transfers
    while True:
        now = time.monotonic()
        elapsed = max(1e-9, now - t0)
        progress.update(
            task,
            completed=min(now, stop_at) - t0,
            ops=f"{demo.requests - start_requests:,} requests "
            f"({(demo.requests - start_requests) / elapsed:,.0f}/s), "
            f"{demo.transfers - start_transfers:,} transfers",
        )
        await asyncio.sleep(0.1)


def _print(result: DemoResult, console: Console) -> None:
    lat = result.latency
    console.print(
        f"\n[bold]throughput[/]: {result.requests:,} requests in {result.duration_s:.1f}s = "
        f"[bold]{result.requests_per_s:,.0f} requests/s[/], "
        f"{result.transfers:,} transfers = [bold]{result.transfers_per_s:,.0f} transfers/s[/]"
    )
    console.print(
        f"[bold]latency[/] (all requests): p50 {lat['p50_ms']:.1f} ms, "
        f"p95 {lat['p95_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
    )
    table = Table(title="operations", title_justify="left")
    for col in ("operation", "requests", "p50 ms", "p95 ms", "p99 ms", "outcomes"):
        table.add_column(col, justify="left" if col in ("operation", "outcomes") else "right")
    for op in result.operations:
        outcomes = "\n".join(f"{n:>7,}  {label}" for label, n in op.outcomes.items())
        table.add_row(
            op.name,
            f"{op.requests:,}",
            f"{op.p50_ms:.1f}",
            f"{op.p95_ms:.1f}",
            f"{op.p99_ms:.1f}",
            outcomes,
        )
    console.print(table)
    console.print(
        f"[bold]sharding[/]: {result.shards} shards, {result.cross_shard_transfers:,} "
        "cross-shard transfers, each settled by its own request (see the promises)"
    )
    if result.cross_shard_act is not None:
        print_act(result.cross_shard_act, console)
    if result.payments is not None:
        print_report(result.payments, console)
    if result.reconciliation is not None:
        print_recon(result.reconciliation, console)
    if result.audit is not None:
        print_cluster_report(result.audit, console)
    promises = Table(title="promises", title_justify="left")
    for col in ("", "promise", "checks", "broken"):
        promises.add_column(col, justify="right" if col in ("checks", "broken") else "left")
    for p in result.promises:
        mark = "[green]✓[/]" if p.broken == 0 else "[red]✗[/]"
        promises.add_row(mark, p.name, f"{p.checks:,}", f"{p.broken:,}")
    console.print(promises)
    for p in result.promises:
        for example in p.examples:
            console.print(f"  [red]✗[/] {p.name}: {example}")
    merchant_note = ""
    if result.audit is not None:
        moved = sum(
            t.credits_posted
            for report in result.audit.shards.values()
            for t in report.totals
            if t.currency == CURRENCY
        )
        merchant_note = f"; {format_minor(moved, CURRENCY)} moved in total (clearing included)"
    verdict = (
        "[bold green]every promise held[/]"
        if result.ok
        else "[bold red]PROMISE BROKEN[/] (see above)"
    )
    console.print(f"{verdict}{merchant_note}; {result.seconds_total:.1f}s in all")
