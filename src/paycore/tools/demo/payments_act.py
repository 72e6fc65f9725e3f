"""``paycore demo``'s payments act: card payments through three simulated processors,
one of which goes down midway and comes back.

The processors are ``paycore acquirer-sim`` child processes on free ports (our own
code: nothing to install), with different latencies: ``acq-a`` fast, ``acq-b`` medium,
``acq-c`` slow-ish. The payment service routes them by smooth weighted round robin
(5:3:2), each behind its own circuit breaker (a count window of 20 calls, 10 at least,
opens at 50 % failures, ``wait_in_open`` about 2 s, 3 half-open probes), a bulkhead, a
timeout and one retry. ``--payment-clients`` concurrent clients then run, through the
HTTP API in-process, card payments with automatic and manual capture (full, partial,
several, a moment later, canceled), declined cards, a few cards whose answer hangs (``processing``,
then ended by the node's resolver), wallet top-ups by card, payouts, refunds (a few
of them racing each other) and Idempotency-Key replays.

At 30 % of the act ``acq-a`` is taken down (``PUT /admin/config {"down": true}``): its
calls fail, its breaker opens, the router skips it and its traffic shifts to the two
others, so the cards that any processor accepts keep succeeding. At 65 % it comes back
(``{"down": false}``); its breaker goes half-open and closes on the probes' success.
Captures and cancels of authorizations ``acq-a`` holds must wait for it: they answer
503 ``processor_unavailable`` during the outage and are retried after.

The act keeps its own model of every answer and checks, at the end, each payment
against the API, the ledger (its transfers, by ``metadata.payment``) and the
processors' own books (a status lookup of every attempt's reference): no double
charge, refunds within what was captured, every state as its card and flow call for,
payouts and wallet balances exact. ``scan_for_cards`` then proves that no card number
reached the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import ssl
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from paycore.config import ProcessorConfig, Settings
from paycore.ledger.tenancy import internal_account_id
from paycore.payments.processors.simulator.process import SimulatorProcess
from paycore.payments.resilient import ResilientConnector
from paycore.payments.service import PaymentService
from paycore.resilience import BreakerEvent, EventKind
from paycore.storage.store import Store
from paycore.tools.demo.asgi_client import DEMO_TENANT, AsgiClient, Json, json_of
from paycore.tools.demo.promises import OpStats, Promise, op_stats
from paycore.tools.loadgen import HttpResponse, latency_summary

__all__ = [
    "DOWN",
    "PROCESSORS",
    "Fleet",
    "PaymentsAct",
    "PaymentsReport",
    "TimelineRow",
    "card_numbers",
    "payment_settings",
    "print_report",
    "scan_for_cards",
]

CURRENCY: Final = "USD"
MERCHANTS: Final = tuple(f"demo.shop{i}" for i in range(6))
WALLETS: Final = tuple(f"demo.pw{i}" for i in range(8))
DOWN: Final = "acq-a"  # the processor the act takes down
DOWN_AT: Final = 0.30  # share of the act's duration
UP_AT: Final = 0.65
GOOD_RATE: Final = 99.0  # percent of good cards that must succeed during the outage

# Test cards of the simulator (see paycore.payments.processors.simulator).
APPROVED_CARDS: Final = ("4242424242424242", "5555555555554444", "378282246310005")
DECLINED_CARDS: Final = {
    "4000000000009995": "insufficient_funds",
    "4000000000000002": "do_not_honor",
    "4000000000009979": "stolen_card",
}
TIMEOUT_CARD: Final = "4000000000007775"  # done at once, every answer about it hangs
MAX_TIMEOUTS: Final = 4  # hung payments the act makes (each holds a connection a while)


@dataclass(frozen=True)
class _Processor:
    name: str
    weight: int
    flags: tuple[str, ...]  # paycore acquirer-sim flags
    latency: str


PROCESSORS: Final = (
    _Processor("acq-a", 5, ("--latency-ms", "5", "--jitter-ms", "10"), "fast, 5-15 ms"),
    _Processor(
        "acq-b", 3, ("--latency-p50-ms", "30", "--latency-p99-ms", "90"), "medium, p50 30 ms"
    ),
    _Processor(
        "acq-c",
        2,
        ("--latency-p50-ms", "70", "--latency-p99-ms", "220", "--latency-max-ms", "600"),
        "slow-ish, p50 70 ms",
    ),
)
HANG_SECONDS: Final = 3.0  # how long the timeout card's answers hang
CALL_TIMEOUT: Final = 1.0  # seconds per attempt (the resilience timeout)
RESOLVE_AFTER: Final = 3.0  # the resolver's older_than: above two attempts and a backoff


_encode = msgspec.json.Encoder().encode


def _label(response: HttpResponse) -> str:
    label = str(response.status)
    body = json_of(response)
    if response.status >= 400:
        label += f" {body.get('code', '?')}"
    elif "status" in body:
        label += f" {body['status']}"
    if response.headers.get("idempotent-replayed") == "true":
        label += " (replayed)"
    return label


# -- the processors --------------------------------------------------------------------------


class Fleet:
    """The act's simulator processes: spawned early (they boot while the ledger act
    settles), ``ready()`` once needed, ``stop()`` always (SIGTERM, then SIGKILL)."""

    def __init__(self, processes: Sequence[SimulatorProcess]) -> None:
        self.processes = {p.name: p for p in processes}
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def spawn(cls, log_dir: Path, seed: int) -> Fleet:
        log_dir.mkdir(parents=True, exist_ok=True)
        processes: list[SimulatorProcess] = []
        try:
            for index, p in enumerate(PROCESSORS):
                flags = (
                    *p.flags,
                    "--hang-seconds",
                    f"{HANG_SECONDS:g}",
                    "--seed",
                    str(seed + index),
                )
                processes.append(
                    SimulatorProcess.spawn(
                        p.name, *flags, log_path=log_dir / f"{p.name}.log", log_level="warning"
                    )
                )
        except BaseException:
            cls(processes).stop()
            raise
        return cls(processes)

    async def ready(self, seconds: float = 30.0) -> dict[str, str]:
        """Wait for every simulator to answer (at most ``seconds``); name -> base URL."""
        await asyncio.gather(
            *(asyncio.to_thread(p.wait_ready, seconds) for p in self.processes.values())
        )
        return {name: p.url for name, p in self.processes.items()}

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # plain HTTP: no CA bundle needed
            self._http = httpx.AsyncClient(timeout=10.0, verify=tls)
        return self._http

    async def configure(self, name: str, **changes: Any) -> None:
        response = await self.http.put(f"{self.processes[name].url}/admin/config", json=changes)
        response.raise_for_status()

    async def lookup_all(self, wanted: Sequence[tuple[str, str]], workers: int = 12) -> list[Json]:
        """The processors' records of ``(processor, reference)`` pairs, in order
        (``{"status": "not_found"}`` for none). Each worker has its own client: one
        httpx pool shared by many concurrent requests is several times slower."""
        answers: list[Json] = [{} for _ in wanted]
        queue = list(enumerate(wanted))
        queue.reverse()

        # The simulators speak plain HTTP: a context with no CA loaded saves ~60 ms of
        # CPU per client (httpx loads the CA bundle for each one otherwise).
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=10.0, verify=tls) as client:
                while queue:
                    index, (name, reference) = queue.pop()
                    url = f"{self.processes[name].url}/v1/operations/{reference}"
                    response = await client.get(url)
                    if response.status_code not in (200, 404):
                        raise RuntimeError(f"{name}: lookup {reference} -> {response.status_code}")
                    answers[index] = response.json()

        await asyncio.gather(*(worker() for _ in range(min(workers, len(wanted)))))
        return answers

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def stop(self) -> None:
        """End every process (all signalled first, then each waited for)."""
        for p in self.processes.values():
            if p.process.poll() is None:
                p.process.terminate()
        for p in self.processes.values():
            p.stop(grace=3.0)


def wait_in_open(duration: float) -> float:
    """The breakers' open duration: short enough for two or three half-open rounds
    during the outage (which lasts 35 % of the act)."""
    return round(min(2.0, max(0.5, duration / 7)), 2)


def payment_settings(
    settings: Settings, urls: dict[str, str], *, duration: float, seed: int
) -> Settings:
    """``settings`` with the act's processors, their resilience, the routing, and a
    resolver quick enough for the act (see the module docstring)."""
    resilience: Json = {
        "timeout": CALL_TIMEOUT,
        "breaker": {
            "failure_rate_threshold": 50.0,
            "slow_call_rate_threshold": 100.0,
            "slow_call_duration": 2.0,
            "window_type": "count_based",
            "window_size": 20,
            "minimum_calls": 10,
            "wait_in_open": wait_in_open(duration),
            "permitted_calls_in_half_open": 3,
        },
        "bulkhead": {"max_concurrent": 64, "max_wait": 0.0},
        "retry": {"attempts": 2, "deadline": 2.0, "wait_initial": 0.02, "wait_max": 0.1,
                  "wait_jitter": 0.02},
    }  # fmt: skip
    processors = tuple(
        ProcessorConfig(p.name, urls[p.name], timeout_seconds=2.0, resilience=resilience)
        for p in PROCESSORS
    )
    routing: Json = {
        "seed": seed,
        "default": {
            "strategy": "weighted_round_robin",
            "processors": [{"name": p.name, "weight": p.weight} for p in PROCESSORS],
        },
    }
    return msgspec.structs.replace(
        settings,
        processors=processors,
        routing=routing,
        payment_resolve_after_seconds=RESOLVE_AFTER,
        payment_worker_interval_seconds=0.5,
    )


# -- what the act measured -------------------------------------------------------------------


class Transition(msgspec.Struct, frozen=True):
    at_s: float  # seconds since the act's workload started
    processor: str
    from_state: str
    to_state: str
    trigger: str


class TimelineRow(msgspec.Struct):
    """One second of the act."""

    second: int
    payments: int  # card payments sent in this second
    good: int  # of which with a card some processor accepts
    good_ok: int  # ... that succeeded (or were authorized)
    served: dict[str, int]  # processor -> attempts it answered (approved, declined, timed out)
    failed: dict[str, int]  # processor -> calls that failed there (its breaker's count)
    states: dict[str, list[str]]  # processor -> breaker state at the start, then each change
    events: list[str]


class PaymentsReport(msgspec.Struct):
    """The numbers of the payments act (in ``--json`` under ``payments``)."""

    duration_s: float
    clients: int
    processors: dict[str, str]  # name -> latency profile
    weights: dict[str, int]
    down: str
    breaker: dict[str, Any]
    requests: int
    requests_per_s: float
    card_payments: int
    payments_per_s: float
    success_rate: float  # percent of good cards that succeeded, whole act
    outage_success_rate: float  # ... during the outage
    outage_good_payments: int
    outage_s: list[float]  # [start, end] in act seconds
    time_to_open_s: float | None
    time_to_close_s: float | None
    failed_calls_before_open: int
    half_open_rounds_during_outage: int
    fallbacks: int  # payments approved after a failure at another processor
    deferred: int  # captures/cancels refused 503 (processor down), done once it was back
    timeouts: int  # payments answered processing (timeout card), then resolved
    refunds: int
    refund_races: int
    payouts: int
    topups: int
    replays: int
    transitions: list[Transition]
    timeline: list[TimelineRow]
    operations: list[OpStats]
    latency: dict[str, float]
    verified: dict[str, int]  # what the end checks covered
    seconds: dict[str, float]  # wall time of each phase of the act


# -- the act's model of what it was told -----------------------------------------------------


@dataclass
class _Pay:
    id: str
    kind: str  # auto, manual, topup, decline, timeout
    target: str  # the credited account (merchant, or the wallet of a top-up)
    amount: int
    number: str
    good: bool  # a card some processor accepts
    started: float
    ended: float
    status: str  # as first answered
    processor: str | None
    attempts: list[Json]
    expect: str = ""  # the final status the flow calls for
    expect_captured: int = 0
    refunds: list[str] = field(default_factory=list)
    refund_reserved: int = 0  # refunds asked and not answered yet
    refundable: int = 0  # captured minus refunds succeeded or in flight (the model's)


@dataclass
class _Payout:
    id: str
    wallet: str
    amount: int
    status: str


@dataclass
class _Deferred:
    due: float
    what: str
    run: Callable[[], Awaitable[bool]]  # True: done; False: try again later
    tries: int = 0


class PaymentsAct:
    """The act over ``client`` (the app serving ``service``) and ``fleet``."""

    def __init__(
        self,
        client: AsgiClient,
        service: PaymentService,
        fleet: Fleet,
        *,
        duration: float,
        clients: int,
        seed: int,
    ) -> None:
        self.client = client
        self.service = service
        self.fleet = fleet
        self.duration = duration
        self.clients = clients
        self.seed = seed
        self.rnd = random.Random(seed)  # noqa: S311 - a workload, not secrets
        year = datetime.now(UTC).year + 3
        self.exp = (12, year)
        # Approved cards: the simulator's, and a few more Luhn-valid numbers.
        self.good_cards = [*APPROVED_CARDS, *(_luhn_card(self.rnd) for _ in range(6))]
        self.pays: dict[str, _Pay] = {}
        self.refundable: list[str] = []
        self.refunds: dict[str, tuple[str, int]] = {}  # refund id -> (payment id, amount)
        self.refund_answers: dict[str, str] = {}  # refund id -> status first answered
        self.payouts: list[_Payout] = []
        self.wallet_funds: dict[str, int] = dict.fromkeys(WALLETS, 0)  # topups - payouts
        self.deferred: list[_Deferred] = []
        self.deferred_total = 0
        self.transitions: list[Transition] = []
        self.breaker_failures: list[tuple[float, str]] = []  # (act seconds, processor)
        self.phases: dict[str, float] = {}  # seconds per phase
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.requests = 0
        self.timeouts = 0
        self.replays = 0
        self.races = 0
        self.t0 = 0.0
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.stop_at = 0.0
        self.p_errors = Promise(
            "payment API: no 5xx but 503 processor_unavailable (processor down)"
        )
        self.p_outage = Promise(
            f"{DOWN} down: its breaker opens, traffic shifts, >= {GOOD_RATE:g}% of good cards "
            "succeed, it closes again through half-open probes"
        )
        self.p_states = Promise(
            "every payment, capture, refund and payout ends as its flow calls for"
        )
        self.p_charge = Promise(
            "no double charge: each payment moved its captures once, in the ledger and at the "
            "processor; payouts paid once"
        )
        self.p_refunds = Promise("refunds never exceed what was captured, racing ones included")
        self.p_idem = Promise("a payment retried with its Idempotency-Key replays the first answer")

    def promises(self) -> list[Promise]:
        return [self.p_outage, self.p_charge, self.p_refunds, self.p_states, self.p_idem,
                self.p_errors]  # fmt: skip

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- plumbing -------------------------------------------------------------------------

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Json | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        raw = None if body is None else _encode(body)
        t0 = time.perf_counter()
        response = await self.client.request(method, path, raw, headers)
        self.latencies[kind].append(time.perf_counter() - t0)
        self.requests += 1
        self.outcomes[kind][_label(response)] += 1
        unavailable = response.status == 503 and json_of(response).get("code") == (
            "processor_unavailable"
        )
        self.p_errors.check(
            response.status < 500 or unavailable,
            f"{method} {path} -> {response.status} {response.body[:200]!r}",
        )
        return response

    def card(self, number: str) -> Json:
        cvc = "1234" if number.startswith(("34", "37")) else "123"
        return {"number": number, "exp_month": self.exp[0], "exp_year": self.exp[1], "cvc": cvc}

    # -- setup ----------------------------------------------------------------------------------

    async def setup(self) -> None:
        accounts: list[Json] = [
            {"id": m, "currency": CURRENCY, "metadata": {"role": "merchant"}} for m in MERCHANTS
        ] + [
            {"id": w, "currency": CURRENCY, "flags": {"no_overdraft": True},
             "metadata": {"role": "wallet"}}
            for w in WALLETS
        ]  # fmt: skip
        for body in accounts:
            response = await self.call("setup", "POST", "/v1/accounts", body)
            if response.status != 201:
                raise RuntimeError(f"payments act: creating {body['id']}: {_label(response)}")

    def watch_breakers(self) -> None:
        for connector in self.service.connectors.values():
            if isinstance(connector, ResilientConnector):
                connector.breaker.add_listener(self._on_breaker)

    def _on_breaker(self, event: BreakerEvent) -> None:
        if event.kind is EventKind.FAILURE and event.counted:
            self.breaker_failures.append((event.at - self.t0, event.breaker))
        if event.kind is EventKind.TRANSITION and event.previous is not None:
            self.transitions.append(
                Transition(
                    at_s=event.at - self.t0,
                    processor=event.breaker,
                    from_state=event.previous.value,
                    to_state=event.state.value,
                    trigger="" if event.trigger is None else event.trigger.value,
                )
            )

    def breaker_states(self) -> dict[str, str]:
        return {
            name: c.snapshot().state.value
            for name, c in self.service.connectors.items()
            if isinstance(c, ResilientConnector)
        }

    # -- the workload ---------------------------------------------------------------------------

    async def run(self, progress: Progress) -> None:
        self.watch_breakers()
        self.t0 = time.monotonic()
        self.stop_at = self.duration
        task = progress.add_task("payments (acq-a goes down)", total=self.duration, ops="")
        ticker = asyncio.create_task(self._tick(progress, task))
        outage = asyncio.create_task(self._outage())
        try:
            await asyncio.gather(*(self._client(i) for i in range(self.clients)))
            await outage
        finally:
            ticker.cancel()
            outage.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            with contextlib.suppress(asyncio.CancelledError):
                await outage
        progress.update(task, completed=self.duration)

    async def _outage(self) -> None:
        await asyncio.sleep(max(0.0, DOWN_AT * self.duration - self.now()))
        self.down_at = self.now()
        await self.fleet.configure(DOWN, down=True)
        await asyncio.sleep(max(0.0, UP_AT * self.duration - self.now()))
        self.up_at = self.now()
        await self.fleet.configure(DOWN, down=False)

    async def _tick(self, progress: Progress, task: Any) -> None:
        while True:
            now = self.now()
            pays = [p for p in self.pays.values() if p.ended >= now - 1.0]
            good = [p for p in pays if p.good]
            ok = sum(1 for p in good if p.status in ("succeeded", "requires_capture"))
            rate = f"{100.0 * ok / len(good):.1f}%" if good else "-"
            states = " ".join(f"{n} {s}" for n, s in self.breaker_states().items())
            progress.update(
                task,
                completed=min(now, self.duration),
                ops=f"{len(pays)}/s, good cards ok {rate}; {states}",
            )
            await asyncio.sleep(0.2)

    async def _client(self, index: int) -> None:
        rnd = random.Random(self.seed * 7_919 + index)  # noqa: S311 - a workload
        ops: dict[str, Callable[[random.Random, str], Awaitable[None]]] = {
            "auto": self.op_auto,
            "manual": self.op_manual,
            "topup": self.op_topup,
            "decline": self.op_decline,
            "refund": self.op_refund,
            "refund_race": self.op_refund_race,
            "payout": self.op_payout,
            "timeout": self.op_timeout,
        }
        weights = {"auto": 52, "manual": 20, "topup": 8, "decline": 5, "refund": 9,
                   "refund_race": 1, "payout": 3, "timeout": 1}  # fmt: skip
        names, w = list(weights), list(weights.values())
        seq = 0
        while self.now() < self.stop_at:
            seq += 1
            if await self._run_deferred():
                continue
            kind = rnd.choices(names, w)[0]
            await ops[kind](rnd, f"c{index}-{seq}")

    async def _run_deferred(self) -> bool:
        """Run one deferred capture or cancel that is due; whether there was one."""
        now = self.now()
        for item in self.deferred:
            if item.due <= now:
                self.deferred.remove(item)
                item.tries += 1
                if not await item.run():
                    item.due = self.now() + 0.3
                    self.deferred.append(item)
                return True
        return False

    # -- card payments ----------------------------------------------------------------------------

    async def pay(
        self,
        rnd: random.Random,
        tag: str,
        *,
        kind: str,
        number: str,
        target: str,
        capture: str = "automatic",
        good: bool = True,
    ) -> _Pay | None:
        amount = rnd.randrange(500, 20_000)
        body = {"amount": amount, "currency": CURRENCY, "merchant_account_id": target,
                "capture": capture, "source": {"card": self.card(number)}}  # fmt: skip
        headers = {"Idempotency-Key": f"demo-{self.seed}-{tag}"}
        started = self.now()
        response = await self.call(kind, "POST", "/v1/payments", body, headers)
        ended = self.now()
        p = json_of(response)
        if response.status != 201:
            self.p_states.check(False, f"{kind} payment -> {_label(response)}")
            return None
        attempts = [a for a in p["attempts"] if a["operation"] == "authorize"]
        pay = _Pay(p["id"], kind, target, amount, number, good, started, ended, p["status"],
                   p["processor"], attempts)  # fmt: skip
        self.pays[pay.id] = pay
        if kind == "auto" and rnd.random() < 0.05:  # the client retries: same key, same body
            again = await self.call("replay", "POST", "/v1/payments", body, headers)
            self.replays += 1
            self.p_idem.check(
                again.headers.get("idempotent-replayed") == "true"
                and (again.status, again.body) == (response.status, response.body),
                f"{pay.id}: replay -> {_label(again)}",
            )
        return pay

    def approved(self, pay: _Pay, want: str) -> bool:
        ok = pay.status == want
        self.p_states.check(ok, f"{pay.id} ({pay.kind}, ****{pay.number[-4:]}): {pay.status}")
        return ok

    async def op_auto(self, rnd: random.Random, tag: str) -> None:
        pay = await self.pay(rnd, tag, kind="auto", number=rnd.choice(self.good_cards),
                             target=rnd.choice(MERCHANTS))  # fmt: skip
        if pay is None:
            return
        pay.expect, pay.expect_captured = "succeeded", pay.amount
        if self.approved(pay, "succeeded"):
            pay.refundable = pay.amount
            self.refundable.append(pay.id)

    async def op_topup(self, rnd: random.Random, tag: str) -> None:
        wallet = rnd.choice(WALLETS)
        pay = await self.pay(rnd, tag, kind="topup", number=rnd.choice(self.good_cards),
                             target=wallet)  # fmt: skip
        if pay is None:
            return
        pay.expect, pay.expect_captured = "succeeded", pay.amount
        if self.approved(pay, "succeeded"):
            self.wallet_funds[wallet] += pay.amount

    async def op_decline(self, rnd: random.Random, tag: str) -> None:
        number = rnd.choice(list(DECLINED_CARDS))
        pay = await self.pay(rnd, tag, kind="decline", number=number,
                             target=rnd.choice(MERCHANTS), good=False)  # fmt: skip
        if pay is None:
            return
        pay.expect = "failed"
        declined = [a for a in pay.attempts if a["outcome"] == "declined"]
        self.p_states.check(
            pay.status == "failed"
            and len(declined) == 1
            and declined[0]["decline_code"] == DECLINED_CARDS[number],
            f"{pay.id} (****{number[-4:]}): {pay.status}, attempts {pay.attempts}",
        )

    async def op_timeout(self, rnd: random.Random, tag: str) -> None:
        if self.timeouts >= MAX_TIMEOUTS or self.now() > 0.5 * self.duration:
            await self.op_auto(rnd, tag)
            return
        self.timeouts += 1
        pay = await self.pay(rnd, tag, kind="timeout", number=TIMEOUT_CARD,
                             target=rnd.choice(MERCHANTS), good=False)  # fmt: skip
        if pay is None:
            return
        pay.expect, pay.expect_captured = "succeeded", pay.amount  # once the resolver ran
        self.p_states.check(
            pay.status == "processing" and pay.attempts[-1]["outcome"] == "ambiguous",
            f"{pay.id} (timeout card): answered {pay.status}",
        )

    async def op_manual(self, rnd: random.Random, tag: str) -> None:
        pay = await self.pay(rnd, tag, kind="manual", number=rnd.choice(self.good_cards),
                             target=rnd.choice(MERCHANTS), capture="manual")  # fmt: skip
        if pay is None or not self.approved(pay, "requires_capture"):
            return
        fate = rnd.choices(("full", "partial", "twice", "cancel", "later"), (30, 20, 10, 15, 25))[0]
        if fate == "later":  # captured in full a moment later: maybe its processor is down
            pay.expect, pay.expect_captured = "succeeded", pay.amount
            path = f"/v1/payments/{pay.id}/capture"
            await self.follow_up(pay, "capture", path, {}, delay=rnd.uniform(0.5, 3.0))
            return
        if fate == "cancel":
            pay.expect, pay.expect_captured = "canceled", 0
            await self.follow_up(pay, "cancel", f"/v1/payments/{pay.id}/cancel", {})
            return
        if fate == "full":
            pay.expect, pay.expect_captured = "succeeded", pay.amount
            await self.follow_up(pay, "capture", f"/v1/payments/{pay.id}/capture", {})
            return
        part = rnd.randrange(100, pay.amount)
        path = f"/v1/payments/{pay.id}/capture"
        if fate == "partial":  # one partial capture, the rest released
            pay.expect, pay.expect_captured = "succeeded", part
            await self.follow_up(pay, "capture", path, {"amount": part, "final_capture": True})
            return
        pay.expect, pay.expect_captured = "succeeded", pay.amount  # a part, then the rest
        if await self.follow_up(pay, "capture", path, {"amount": part}, then=({}, "capture")):
            await self.follow_up(pay, "capture", path, {})

    async def follow_up(
        self,
        pay: _Pay,
        op: str,
        path: str,
        body: Json,
        *,
        then: tuple[Json, str] | None = None,
        delay: float = 0.0,
    ) -> bool:
        """A capture or a cancel, now or after ``delay`` seconds; retried every 0.3 s
        while its processor is down (503). True when it was done now."""
        key = f"demo-{self.seed}-{pay.id}-{op}-{_encode(body).hex()}"
        tries = refused = 0

        async def attempt() -> bool:
            nonlocal tries, refused
            tries += 1
            # A new key for each try: the service keeps a capture's or a cancel's 503
            # processor_unavailable under its key and replays it (see the report).
            headers = {"Idempotency-Key": f"{key}-{tries}"}
            response = await self.call(op, "POST", path, body, headers)
            if response.status == 503:  # the processor holding it is down: later
                refused += 1
                self.deferred_total += refused == 1
                return False
            p = json_of(response)
            ok = response.status == 200
            if ok and op == "capture" and "amount" in body:
                ok = p["amount_captured"] >= body["amount"]
            self.p_states.check(ok, f"{pay.id} {op} {body}: {_label(response)}")
            if ok and p["status"] == "succeeded" and p["amount_captured"] > 0:
                pay.refundable = p["amount_captured"]
                self.refundable.append(pay.id)
            return True

        if not delay and await attempt():
            return True

        async def later() -> bool:
            if not await attempt():
                return False
            if then is not None:
                follow_body, follow_op = then
                await self.follow_up(pay, follow_op, path, follow_body)
            return True

        self.deferred.append(_Deferred(self.now() + (delay or 0.3), f"{pay.id} {op}", later))
        return False

    # -- refunds and payouts ----------------------------------------------------------------------

    def pick_refundable(self, rnd: random.Random, least: int) -> _Pay | None:
        for _ in range(8):
            if not self.refundable:
                return None
            pay = self.pays[rnd.choice(self.refundable)]
            if pay.refundable - pay.refund_reserved >= least:
                return pay
        return None

    async def refund(self, pay: _Pay, amount: int, tag: str) -> HttpResponse:
        body = {"payment_id": pay.id, "amount": amount}
        response = await self.call("refund", "POST", "/v1/refunds", body,
                                   {"Idempotency-Key": f"demo-{self.seed}-{tag}"})  # fmt: skip
        r = json_of(response)
        if response.status == 201:
            pay.refunds.append(r["id"])
            self.refunds[r["id"]] = (pay.id, amount)
            self.refund_answers[r["id"]] = r["status"]
        return response

    async def op_refund(self, rnd: random.Random, tag: str) -> None:
        pay = self.pick_refundable(rnd, 1)
        if pay is None:
            await self.op_auto(rnd, tag)
            return
        free = pay.refundable - pay.refund_reserved
        amount = rnd.randrange(1, free + 1) if rnd.random() < 0.7 else free
        pay.refund_reserved += amount
        try:
            response = await self.refund(pay, amount, tag)
        finally:
            pay.refund_reserved -= amount
        status = json_of(response).get("status")
        if status in ("succeeded", "pending"):
            pay.refundable -= amount
        self.p_states.check(
            response.status == 201 and status in ("succeeded", "pending", "failed"),
            f"refund {amount} of {pay.id}: {_label(response)}",
        )

    async def op_refund_race(self, rnd: random.Random, tag: str) -> None:
        """Two refunds of 60 % of what is left, at once: never both."""
        pay = self.pick_refundable(rnd, 10)
        if pay is None or pay.refund_reserved:
            await self.op_auto(rnd, tag)
            return
        free = pay.refundable
        each = math.ceil(free * 0.6)
        pay.refund_reserved += free
        try:
            first, second = await asyncio.gather(
                self.refund(pay, each, f"{tag}-1"), self.refund(pay, each, f"{tag}-2")
            )
        finally:
            pay.refund_reserved -= free
        self.races += 1
        taken = 0
        for response in (first, second):
            r = json_of(response)
            if response.status == 201 and r.get("status") in ("succeeded", "pending"):
                taken += each
            else:
                self.p_states.check(
                    (response.status == 201 and r.get("status") == "failed")
                    or r.get("code") == "refund_exceeds_captured",
                    f"racing refund of {pay.id}: {_label(response)}",
                )
        pay.refundable -= taken
        self.p_refunds.check(taken <= free, f"{pay.id}: racing refunds took {taken} of {free}")

    async def op_payout(self, rnd: random.Random, tag: str) -> None:
        rich = [w for w, funds in self.wallet_funds.items() if funds >= 1_000]
        if not rich:
            await self.op_topup(rnd, tag)
            return
        wallet = rnd.choice(rich)
        amount = rnd.randrange(500, self.wallet_funds[wallet] // 2 + 1)
        self.wallet_funds[wallet] -= amount
        body = {"wallet_account_id": wallet, "amount": amount, "currency": CURRENCY,
                "destination": f"GB00DEMO{rnd.randrange(10**10):010d}"}  # fmt: skip
        response = await self.call("payout", "POST", "/v1/payouts", body,
                                   {"Idempotency-Key": f"demo-{self.seed}-{tag}"})  # fmt: skip
        p = json_of(response)
        if response.status != 201:
            self.wallet_funds[wallet] += amount
            self.p_states.check(False, f"payout from {wallet}: {_label(response)}")
            return
        self.payouts.append(_Payout(p["id"], wallet, amount, p["status"]))
        if p["status"] == "failed":
            self.wallet_funds[wallet] += amount
        self.p_states.check(p["status"] in ("paid", "failed", "processing"),
                            f"payout {p['id']}: {p['status']}")  # fmt: skip

    # -- after the workload -----------------------------------------------------------------------

    async def settle(self, progress: Progress) -> None:
        """Run the deferred captures and cancels, then wait until nothing is in flight
        (the node's resolver ends the hung payments by status lookup)."""
        deadline = time.monotonic() + 15.0
        while self.deferred and time.monotonic() < deadline:
            for item in sorted(self.deferred, key=lambda d: d.due):
                self.deferred.remove(item)
                if not await item.run():
                    self.deferred.append(item)
            if self.deferred:
                await asyncio.sleep(0.3)
        for item in self.deferred:
            self.p_states.check(False, f"{item.what}: still refused 15 s after the act")
        # What was answered in flight: hung payments, and (rarely) refunds or payouts.
        pending = [f"/v1/payments/{p.id}" for p in self.pays.values() if p.status == "processing"]
        pending += [f"/v1/refunds/{r}" for r, s in self.refund_answers.items() if s == "pending"]
        pending += [f"/v1/payouts/{p.id}" for p in self.payouts if p.status == "processing"]
        task = progress.add_task("resolving what hung", total=len(pending) or 1, ops="")
        deadline = time.monotonic() + RESOLVE_AFTER + HANG_SECONDS + 10.0
        while pending and time.monotonic() < deadline:
            answers = await asyncio.gather(*(self.call("read", "GET", path) for path in pending))
            for path, response in zip(list(pending), answers, strict=True):
                if json_of(response).get("status") not in ("processing", "pending"):
                    pending.remove(path)
                    progress.advance(task)
            if pending:
                await asyncio.sleep(0.25)
        for path in pending:
            self.p_states.check(False, f"{path}: still in flight long after the act")
        if not pending:
            progress.update(task, completed=progress.tasks[task].total)

    async def verify(self, store: Store) -> dict[str, int]:
        """Every payment against the API, the ledger and the processors' books."""
        # Answers come back at once from here on: the latency was the story, not this.
        for p in PROCESSORS:
            await self.fleet.configure(p.name, latency={"kind": "fixed", "ms": 0.0})
        gate = asyncio.Semaphore(32)

        async def get(path: str) -> Json:
            async with gate:
                response = await self.call("read", "GET", path)
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {_label(response)}")
            return json_of(response)

        pays = list(self.pays.values())
        finals = await asyncio.gather(*(get(f"/v1/payments/{p.id}") for p in pays))
        refund_ids = list(self.refunds)
        refunds = dict(
            zip(refund_ids, await asyncio.gather(*(get(f"/v1/refunds/{r}") for r in refund_ids)),
                strict=True)
        )  # fmt: skip
        payouts = await asyncio.gather(*(get(f"/v1/payouts/{p.id}") for p in self.payouts))
        moves = await _ledger_moves(store, [_stored(a) for a in (*MERCHANTS, *WALLETS)])
        # Every attempt's record at its processor (authorizations; payouts).
        wanted = [
            (a["processor"], a["reference"])
            for f in finals
            for a in f["attempts"]
            if a["operation"] == "authorize"
        ]
        wanted += [(a["processor"], a["reference"]) for f in payouts for a in f["attempts"]]
        books = dict(zip(wanted, await self.fleet.lookup_all(wanted), strict=True))
        for pay, final in zip(pays, finals, strict=True):
            self.check_payment(pay, final, refunds, moves, books)
        for payout, final in zip(self.payouts, payouts, strict=True):
            records = [books[a["processor"], a["reference"]] for a in final["attempts"]]
            paid = [r for r in records if r.get("status") == "paid_out"]
            want = 1 if final["status"] == "paid" else 0
            out = moves.payouts.get(payout.id, 0)
            self.p_charge.check(
                len(paid) == want and out == want * payout.amount,
                f"payout {payout.id} {final['status']}: {len(paid)} paid at the processors, "
                f"{out} out of the ledger",
            )
            self.p_states.check(
                final["status"] in ("paid", "failed"), f"payout {payout.id}: {final['status']}"
            )
        paid_out: dict[str, int] = defaultdict(int)
        for payout, final in zip(self.payouts, payouts, strict=True):
            if final["status"] == "paid":
                paid_out[payout.wallet] += payout.amount
        accounts = await store.get_accounts([_stored(w) for w in WALLETS])
        for wallet in WALLETS:
            topped = sum(
                f["amount_captured"]
                for p, f in zip(pays, finals, strict=True)
                if p.target == wallet
            )
            stored = accounts.get(_stored(wallet))
            balance = None if stored is None else stored.balance
            self.p_charge.check(
                balance == topped - paid_out[wallet],
                f"{wallet}: balance {balance}, top-ups {topped} - payouts {paid_out[wallet]}",
            )
        return {
            "payments": len(pays),
            "refunds": len(refunds),
            "payouts": len(payouts),
            "ledger_transfers": moves.transfers,
            "processor_lookups": len(wanted),
        }

    def check_payment(
        self,
        pay: _Pay,
        final: Json,
        refunds: dict[str, Json],
        moves: _Moves,
        books: dict[tuple[str, str], Json],
    ) -> None:
        """One payment as the API, the ledger and its processors tell it at the end."""
        refunded = sum(
            refunds[r]["amount"] for r in pay.refunds if refunds[r]["status"] == "succeeded"
        )
        self.p_states.check(
            final["status"] == pay.expect
            and final["amount_captured"] == pay.expect_captured
            and final["amount_refunded"] == refunded
            and final["amount_refund_pending"] == 0
            and all(refunds[r]["status"] in ("succeeded", "failed") for r in pay.refunds),
            f"{pay.id} ({pay.kind}): {final['status']} captured {final['amount_captured']} "
            f"refunded {final['amount_refunded']}, expected {pay.expect} "
            f"{pay.expect_captured} / {refunded}",
        )
        self.p_refunds.check(
            final["amount_refunded"] + final["amount_refund_pending"] <= final["amount_captured"],
            f"{pay.id}: refunded {final['amount_refunded']} of {final['amount_captured']}",
        )
        credit, debit, holds = moves.payments.get(pay.id, (0, 0, 0))
        self.p_charge.check(
            (credit, debit, holds) == (final["amount_captured"], final["amount_refunded"], 0),
            f"{pay.id}: ledger moved {credit} in, {debit} out ({holds} held), payment "
            f"captured {final['amount_captured']}, refunded {final['amount_refunded']}",
        )
        records = [
            books[a["processor"], a["reference"]]
            for a in final["attempts"]
            if a["operation"] == "authorize"
        ]
        taken = [r for r in records if r.get("status") in _TAKEN]
        charged = sum(r.get("captured_amount") or 0 for r in taken)
        returned = sum(r.get("refunded_amount") or 0 for r in taken)
        want = 0 if final["status"] == "failed" else 1
        self.p_charge.check(
            len(taken) == want
            and charged == final["amount_captured"]
            and returned == final["amount_refunded"],
            f"{pay.id}: {len(taken)} authorization(s) at the processors, charged {charged}, "
            f"refunded {returned}; the payment says {final['amount_captured']} / "
            f"{final['amount_refunded']}",
        )

    def judge_outage(self) -> None:
        """The outage story itself, as promises: it opened, shifted, held up, closed."""
        report = self.numbers()
        self.p_outage.check(
            report["time_to_open_s"] is not None,
            f"{DOWN}'s breaker never opened during its outage",
        )
        self.p_outage.check(
            report["time_to_close_s"] is not None,
            f"{DOWN}'s breaker did not close through half-open after it came back",
        )
        self.p_outage.check(
            report["outage_good_payments"] > 0 and report["outage_success_rate"] >= GOOD_RATE,
            f"good cards during the outage: {report['outage_success_rate']:.2f}% succeeded",
        )
        served_while_open = [
            p.id
            for p in self.pays.values()
            if self.down_at is not None
            and report["time_to_open_s"] is not None
            and self.down_at + report["time_to_open_s"] + 0.1 < p.started
            and self.up_at is not None
            and p.ended < self.up_at
            and p.processor == DOWN
            and p.status != "failed"
        ]
        self.p_outage.check(
            not served_while_open,
            f"payments served by {DOWN} while it was down: {served_while_open[:3]}",
        )

    # -- numbers ----------------------------------------------------------------------------------

    def numbers(self) -> Json:
        down, up = self.down_at, self.up_at
        opened = closed = None
        failed_before = rounds = 0
        if down is not None:
            opened = next(
                (t.at_s for t in self.transitions
                 if t.processor == DOWN and t.to_state == "open" and t.at_s >= down),
                None,
            )  # fmt: skip
            failed_before = sum(
                1
                for at, name in self.breaker_failures
                if name == DOWN and down <= at <= (opened if opened is not None else math.inf)
            )
        if up is not None:
            closed = next(
                (t.at_s for t in self.transitions
                 if t.processor == DOWN and t.to_state == "closed" and t.at_s >= up),
                None,
            )  # fmt: skip
            rounds = sum(
                1
                for t in self.transitions
                if t.processor == DOWN
                and t.from_state == "half_open"
                and t.to_state == "open"
                and (down or 0) <= t.at_s < up
            )
        during = [
            p for p in self.pays.values()
            if p.good and down is not None and up is not None and down <= p.started < up
        ]  # fmt: skip
        return {
            "time_to_open_s": None if opened is None or down is None else opened - down,
            "time_to_close_s": None if closed is None or up is None else closed - up,
            "failed_calls_before_open": failed_before,
            "half_open_rounds_during_outage": rounds,
            "outage_good_payments": len(during),
            "outage_success_rate": _rate(during),
        }

    def timeline(self) -> list[TimelineRow]:
        names = [p.name for p in PROCESSORS]
        seconds = max(1, math.ceil(self.duration - 1e-9))
        rows = [
            TimelineRow(
                s,
                0,
                0,
                0,
                dict.fromkeys(names, 0),
                dict.fromkeys(names, 0),
                {n: [] for n in names},
                [],
            )
            for s in range(seconds)
        ]
        for pay in self.pays.values():  # by when it was sent, so routed
            row = rows[min(seconds - 1, int(pay.started))]
            row.payments += 1
            if pay.good:
                row.good += 1
                row.good_ok += pay.status in ("succeeded", "requires_capture")
            for a in pay.attempts:
                name = a["processor"]
                if name in row.served and a["outcome"] in ("approved", "declined", "ambiguous"):
                    row.served[name] += 1
        # Failed calls as the breakers counted them: an attempt's record keeps only its
        # last try (a retry refused by the breaker shows circuit_open, not the 503 before).
        for at, name in self.breaker_failures:
            if name in rows[0].failed and at >= 0:
                rows[min(seconds - 1, int(at))].failed[name] += 1
        state = dict.fromkeys(names, "closed")
        by_second: dict[int, list[Transition]] = defaultdict(list)
        for t in self.transitions:
            by_second[min(seconds - 1, max(0, int(t.at_s)))].append(t)
        for row in rows:
            for name in names:
                row.states[name].append(state[name])
            for t in sorted(by_second[row.second], key=lambda t: t.at_s):
                if t.processor in state:
                    state[t.processor] = t.to_state
                    row.states[t.processor].append(t.to_state)
                    row.events.append(_describe(t, self))
            hung = Counter(
                p.processor or "?"
                for p in self.pays.values()
                if p.kind == "timeout" and min(seconds - 1, int(p.started)) == row.second
            )
            row.events += [
                f"{n} timeout card payment(s) hung at {name}: processing (the resolver ends it)"
                for name, n in sorted(hung.items())
            ]
            if self.down_at is not None and int(self.down_at) == row.second:
                row.events.insert(0, f"{DOWN} taken DOWN at {self.down_at:.2f}s")
            if self.up_at is not None and int(self.up_at) == row.second:
                row.events.insert(0, f"{DOWN} back UP at {self.up_at:.2f}s")
        return rows

    def report(self, elapsed: float, verified: dict[str, int]) -> PaymentsReport:
        numbers = self.numbers()
        pays = list(self.pays.values())
        lat = [x for k, v in self.latencies.items() if k not in ("setup", "read") for x in v]
        requests = sum(len(v) for k, v in self.latencies.items() if k not in ("setup", "read"))
        return PaymentsReport(
            duration_s=elapsed,
            clients=self.clients,
            processors={p.name: p.latency for p in PROCESSORS},
            weights={p.name: p.weight for p in PROCESSORS},
            down=DOWN,
            breaker={
                "window": "count_based",
                "window_size": 20,
                "minimum_calls": 10,
                "failure_rate_threshold": 50.0,
                "wait_in_open_s": wait_in_open(self.duration),
                "permitted_calls_in_half_open": 3,
                "timeout_s": CALL_TIMEOUT,
            },
            requests=requests,
            requests_per_s=requests / elapsed,
            card_payments=len(pays),
            payments_per_s=len(pays) / elapsed,
            success_rate=_rate([p for p in pays if p.good]),
            outage_success_rate=numbers["outage_success_rate"],
            outage_good_payments=numbers["outage_good_payments"],
            outage_s=[self.down_at or 0.0, self.up_at or 0.0],
            time_to_open_s=numbers["time_to_open_s"],
            time_to_close_s=numbers["time_to_close_s"],
            failed_calls_before_open=numbers["failed_calls_before_open"],
            half_open_rounds_during_outage=numbers["half_open_rounds_during_outage"],
            fallbacks=sum(
                1
                for p in pays
                if p.status != "failed" and any(a["outcome"] == "failed" for a in p.attempts)
            ),
            deferred=self.deferred_total,
            timeouts=sum(1 for p in pays if p.kind == "timeout"),
            refunds=len(self.refunds),
            refund_races=self.races,
            payouts=len(self.payouts),
            topups=sum(1 for p in pays if p.kind == "topup"),
            replays=self.replays,
            transitions=self.transitions,
            timeline=self.timeline(),
            operations=op_stats(self.latencies, self.outcomes),
            latency=latency_summary(lat),
            verified=verified,
            seconds=dict(self.phases),
        )


_TAKEN: Final = frozenset({"authorized", "captured", "refunded", "voided"})


def _rate(pays: Iterable[_Pay]) -> float:
    pays = list(pays)
    if not pays:
        return 100.0
    ok = sum(1 for p in pays if p.status in ("succeeded", "requires_capture"))
    return 100.0 * ok / len(pays)


def _luhn_card(rnd: random.Random) -> str:
    """A Luhn-valid 16-digit Visa number no test card table names (so: approved)."""
    digits = [4, 9, *(rnd.randrange(10) for _ in range(13))]
    total = 0
    for i, d in enumerate(reversed(digits)):
        doubled = d * 2 if i % 2 == 0 else d
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def _describe(t: Transition, act: PaymentsAct) -> str:
    what = f"{t.processor} breaker {t.from_state} -> {t.to_state.upper()}"
    if t.to_state == "open" and t.from_state == "closed":
        if act.down_at is not None and t.at_s >= act.down_at and t.processor == DOWN:
            what += f" {t.at_s - act.down_at:.2f}s after the outage began"
    elif t.to_state == "half_open":
        what += " (probes let through)"
    elif t.from_state == "half_open" and t.to_state == "open":
        what += " (probes failed)"
    elif t.to_state == "closed" and act.up_at is not None and t.at_s >= act.up_at:
        what += f" (probes passed) {t.at_s - act.up_at:.2f}s after it came back"
    return what


class _Moves(msgspec.Struct):
    payments: dict[str, tuple[int, int, int]]  # id -> (captured in, refunded out, still held)
    payouts: dict[str, int]  # id -> posted out of the wallet
    transfers: int


def _stored(account_id: str) -> str:
    """The store's id of the demo's account ``account_id`` (its key's tenant's namespace)."""
    return internal_account_id(DEMO_TENANT, account_id)


async def _ledger_moves(store: Store, accounts: Sequence[str]) -> _Moves:
    """What the ledger moved for each payment and payout, from every transfer touching
    the act's merchants and wallets (grouped by their ``metadata``)."""
    payments: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    payouts: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for account in accounts:
        cursor: int | None = None
        while True:
            page = await store.account_transfers(account, limit=1000, cursor=cursor)
            for view in page.data:
                t = view.transfer
                if t.id in seen:
                    continue
                seen.add(t.id)
                meta = t.metadata or {}
                if t.flags.void_pending:
                    continue
                if "payout" in meta:
                    if not t.flags.pending and t.debit_account_id == account:
                        payouts[str(meta["payout"])] += t.amount
                    continue
                pid = meta.get("payment")
                if pid is None:
                    continue
                sums = payments[str(pid)]
                if t.flags.pending:
                    if view.status.value == "pending":
                        sums[2] += t.amount
                elif t.credit_account_id == account:
                    sums[0] += t.amount
                elif t.debit_account_id == account:
                    sums[1] += t.amount
            cursor = page.next_cursor
            if cursor is None:
                break
    return _Moves({k: (v[0], v[1], v[2]) for k, v in payments.items()}, dict(payouts), len(seen))


def scan_for_cards(data_dir: Path, numbers: Iterable[str]) -> tuple[int, list[str]]:
    """(files scanned, "file: ****1234" for each card number found in any file's bytes)."""
    wanted = sorted({n.encode() for n in numbers})
    found: list[str] = []
    files = 0
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        files += 1
        data = path.read_bytes()
        found += [f"{path.name}: ****{n[-4:].decode()}" for n in wanted if n in data]
    return files, found


def card_numbers(act: PaymentsAct) -> list[str]:
    """Every card number the act sent (what ``scan_for_cards`` must not find)."""
    return [*act.good_cards, *DECLINED_CARDS, TIMEOUT_CARD]


# -- the story, printed ----------------------------------------------------------------------------

_STYLE: Final = {"closed": "green", "open": "bold red", "half_open": "yellow"}
_SHORT: Final = {"closed": "closed", "open": "OPEN", "half_open": "half", "forced_open": "FORCED",
                 "disabled": "off"}  # fmt: skip


def _states(states: Sequence[str]) -> str:
    shown = [states[0], *(s for prev, s in itertools.pairwise(states) if s != prev)]
    return "→".join(f"[{_STYLE.get(s, 'white')}]{_SHORT.get(s, s)}[/]" for s in shown)


def print_report(report: PaymentsReport, console: Console) -> None:
    names = list(report.processors)
    down_s, up_s = report.outage_s
    console.print(
        f"\n[bold]payments act[/]: {report.clients} clients for {report.duration_s:.1f}s, "
        "routing smooth weighted round robin "
        + ", ".join(f"{n} {report.weights[n]} ({report.processors[n]})" for n in names)
        + f"; breakers: window {report.breaker['window_size']} calls (min "
        f"{report.breaker['minimum_calls']}), open at {report.breaker['failure_rate_threshold']:g}%"
        f" failures, {report.breaker['wait_in_open_s']:g}s open, "
        f"{report.breaker['permitted_calls_in_half_open']} half-open probes"
    )
    table = Table(title="timeline (per second)", title_justify="left")
    table.add_column("t", justify="right")
    table.add_column("pay/s", justify="right")
    table.add_column("good ok", justify="right")
    for n in names:
        table.add_column(f"{n}\nserved ✗ breaker", justify="left")
    table.add_column("what happened", justify="left")
    for row in report.timeline:
        ok = f"{100.0 * row.good_ok / row.good:.1f}%" if row.good else "-"
        if row.good and row.good_ok < row.good:
            ok = f"[red]{ok}[/]"
        cells = []
        for n in names:
            failed = f" [red]{row.failed[n]}✗[/]" if row.failed[n] else ""
            cells.append(f"{row.served[n]:>4}{failed} {_states(row.states[n])}")
        shade = "on grey11" if down_s <= row.second < up_s or int(down_s) == row.second else ""
        table.add_row(
            f"{row.second}s", f"{row.payments}", ok, *cells, "\n".join(row.events), style=shade
        )
    console.print(table)
    opened = "never" if report.time_to_open_s is None else f"{report.time_to_open_s:.2f}s"
    closed = "never" if report.time_to_close_s is None else f"{report.time_to_close_s:.2f}s"
    console.print(
        f"[bold]payments[/]: {report.card_payments:,} card payments = "
        f"[bold]{report.payments_per_s:,.0f} payments/s[/] ({report.requests:,} payment API "
        f"requests, {report.requests_per_s:,.0f}/s; p50 {report.latency['p50_ms']:.1f} ms, "
        f"p99 {report.latency['p99_ms']:.1f} ms)"
    )
    console.print(
        f"[bold]outage[/] of {report.down} from {down_s:.1f}s to {up_s:.1f}s: good cards "
        f"succeeded [bold]{report.outage_success_rate:.2f}%[/] of "
        f"{report.outage_good_payments:,} during it ({report.success_rate:.2f}% over the act); "
        f"breaker open [bold]{opened}[/] after the outage began "
        f"({report.failed_calls_before_open} failed calls), "
        f"{report.half_open_rounds_during_outage} half-open round(s) failed while down, "
        f"closed [bold]{closed}[/] after it came back"
    )
    console.print(
        f"{report.fallbacks:,} payments approved elsewhere after a failure; "
        f"{report.deferred} captures/cancels waited for their processor to come back; "
        f"{report.timeouts} timed out (processing, then resolved by status lookup); "
        f"{report.refunds} refunds ({report.refund_races} races), {report.payouts} payouts, "
        f"{report.topups} wallet top-ups, {report.replays} Idempotency-Key replays; checked "
        f"{report.verified.get('payments', 0):,} payments against "
        f"{report.verified.get('ledger_transfers', 0):,} ledger transfers and "
        f"{report.verified.get('processor_lookups', 0):,} processor records"
    )
