"""``paycore demo``'s cross-shard act: holds and linked chains between wallets on
different shards, through the HTTP API, checked answer by answer and balance by balance.

Four wallets of its own (``no_overdraft``), placed by the store's ``shard_for`` on
different shards: A, B and C funded with 100.00, E empty. Then, each step read back with
``GET /v1/accounts/{id}`` for all four:

1. a hold of 40.00 from A to B: ``pending``; A shows it as debits_pending, B as
   credits_pending;
2. a capture of 25.00 of it: ``posted``; the other 15.00 is released on both sides;
3. another hold of 10.00 from A to B, then its void: ``voided``, released on both sides;
4. a linked chain over three shards, A -> E 30.00 then E -> C 30.00: both ``posted``;
   E, empty, passes on in the chain what it received in it;
5. a linked chain whose last item asks E for more than it will hold (A -> E 30.00,
   E -> C 20.00, E -> B 20.00): ``linked_event_failed`` twice then
   ``insufficient_funds``; no balance moves and none of its transfers exists (404).

The contract is the one-shard semantics: each answer (status, amount, and the client's
own accounts on a post or void) and all four counters of every wallet after every step
are compared with it; any difference breaks the act's promise (the demo exits 1). The
acknowledged effects are also booked in the demo's model, so its end-of-run comparison
and the audit cover them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec
from rich.console import Console
from rich.table import Table

from paycore.money import format_minor
from paycore.tools.demo.asgi_client import AsgiClient, Json, json_of
from paycore.tools.demo.promises import Promise
from paycore.tools.loadgen import HttpResponse

__all__ = ["CrossShardAct", "CrossShardReport", "print_act"]

LABELS: Final = ("A", "B", "E", "C")  # by shard, in this order; E starts empty
FUNDED: Final = 10_000  # A, B and C: 100.00 each

Counters = list[int]  # debits_pending, debits_posted, credits_pending, credits_posted


class Book(Protocol):
    """The demo's model of acknowledged effects (``demo._Model``)."""

    def posted(self, debit: str, credit: str, amount: int) -> None: ...
    def held(self, debit: str, credit: str, amount: int) -> None: ...
    def released(self, debit: str, credit: str, amount: int) -> None: ...


class ActWallet(msgspec.Struct):
    label: str
    id: str
    shard: str


class ActStep(msgspec.Struct):
    """One step: what was asked, what the API answered and what the contract says, and
    every wallet's counters (``[dp, dpo, cp, cpo]``, by label) read after it."""

    step: list[str]  # one line per request item
    answers: list[str]
    expected_answers: list[str]
    balances: dict[str, Counters]
    expected_balances: dict[str, Counters]
    ok: bool


class CrossShardReport(msgspec.Struct):
    wallets: list[ActWallet]
    steps: list[ActStep]
    seconds: float
    ok: bool


class _Counters:
    """The contract's counters by account: every effect the steps ask for, whatever the
    answers (the demo's model books only the acknowledged ones)."""

    def __init__(self) -> None:
        self.c: dict[str, Counters] = {}

    def _get(self, account: str) -> Counters:
        return self.c.setdefault(account, [0, 0, 0, 0])

    def posted(self, debit: str, credit: str, amount: int) -> None:
        self._get(debit)[1] += amount
        self._get(credit)[3] += amount

    def held(self, debit: str, credit: str, amount: int) -> None:
        self._get(debit)[0] += amount
        self._get(credit)[2] += amount

    def released(self, debit: str, credit: str, amount: int) -> None:
        self._get(debit)[0] -= amount
        self._get(credit)[2] -= amount


def _problem(response: HttpResponse) -> str:
    return f"{response.status} {json_of(response).get('code', '?')}"


def _amount(minor: int) -> str:
    return format_minor(minor, "USD").removesuffix(" USD")


def pick_wallets(shards: Sequence[str], shard_for: Callable[[str], str]) -> list[ActWallet]:
    """A, B, E and C on the first four shards (round robin over fewer), by ``shard_for``."""
    wallets: list[ActWallet] = []
    for i, label in enumerate(LABELS):
        shard = shards[i % len(shards)]
        candidates = (f"demo.x{label.lower()}{n}" for n in range(100_000))
        wallet = next((w for w in candidates if shard_for(w) == shard), f"demo.x{label.lower()}")
        wallets.append(ActWallet(label, wallet, shard_for(wallet)))
    return wallets


class CrossShardAct:
    """Runs the act on ``client`` (see the module docstring); ``book`` gets the
    acknowledged effects, ``promise`` every check."""

    def __init__(
        self,
        client: AsgiClient,
        *,
        shards: Sequence[str],
        shard_for: Callable[[str], str],
        funding: str,
        currency: str,
        book: Book,
        promise: Promise,
    ) -> None:
        self.client = client
        self.funding = funding
        self.currency = currency
        self.book = book
        self.promise = promise
        self.wallets = pick_wallets(shards, shard_for)
        self.ids = {w.label: w.id for w in self.wallets}
        self.contract = _Counters()
        self.steps: list[ActStep] = []

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Json | None = None) -> HttpResponse:
        raw = msgspec.json.encode(body) if body is not None else None
        response = await self.client.request(method, path, raw)
        self.promise.check(
            response.status < 500, f"{method} {path} -> {response.status} {response.body[:200]!r}"
        )
        return response

    def _transfer(self, tid: str, debit: str, credit: str, amount: int, **extra: Any) -> Json:
        return {
            "id": tid,
            "debit_account_id": self.ids[debit],
            "credit_account_id": self.ids[credit],
            "amount": amount,
            "currency": self.currency,
            **extra,
        }

    async def _balances(self) -> dict[str, Counters]:
        responses = await asyncio.gather(
            *(self._call("GET", f"/v1/accounts/{w.id}") for w in self.wallets)
        )
        balances: dict[str, Counters] = {}
        for w, response in zip(self.wallets, responses, strict=True):
            b = json_of(response).get("balance", {})
            balances[w.label] = [
                b.get(k, -1)
                for k in ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
            ]
        return balances

    async def _step(self, lines: list[str], answers: list[str], expected: list[str]) -> None:
        """Read every wallet back and compare answers and counters with the contract."""
        balances = await self._balances()
        want = {w.label: list(self.contract.c.get(w.id, [0, 0, 0, 0])) for w in self.wallets}
        ok = answers == expected
        self.promise.check(ok, f"{lines[0]}: answered {answers}, contract {expected}")
        for label in self.ids:
            fine = balances[label] == want[label]
            ok = ok and fine
            self.promise.check(
                fine,
                f"{lines[0]}: {label} [dp dpo cp cpo] {balances[label]}, contract {want[label]}",
            )
        self.steps.append(ActStep(lines, answers, expected, balances, want, ok))

    def _answer(self, response: HttpResponse, debit: str, credit: str) -> str:
        """``201 pending 40.00``; the accounts and metadata too when they are not the
        client's own (a post or void answers with the hold's two accounts, as on one shard)."""
        t = json_of(response)
        if response.status >= 300 or "status" not in t:
            return _problem(response)
        text = f"{response.status} {t['status']} {_amount(int(t.get('amount', 0)))}"
        shown = (t.get("debit_account_id"), t.get("credit_account_id"))
        if shown != (self.ids[debit], self.ids[credit]):
            text += f" {shown[0]} → {shown[1]}"
        if t.get("metadata") is not None:  # the act sends none
            text += f" metadata {sorted(t['metadata'])}"
        return text

    @staticmethod
    def _item(result: Json) -> str:
        return str(result.get("status") or result.get("error", {}).get("code", "?"))

    # -- the act ----------------------------------------------------------------------------

    async def run(self) -> CrossShardReport:
        started = time.perf_counter()
        await self._open_wallets()
        await self._holds()
        await self._chains()
        ok = all(s.ok for s in self.steps)
        return CrossShardReport(self.wallets, self.steps, time.perf_counter() - started, ok)

    async def _open_wallets(self) -> None:
        created = await asyncio.gather(
            *(
                self._call(
                    "POST",
                    "/v1/accounts",
                    {"id": w.id, "currency": self.currency, "flags": {"no_overdraft": True}},
                )
                for w in self.wallets
            )
        )
        for w, response in zip(self.wallets, created, strict=True):
            if response.status != 201:
                raise RuntimeError(f"cross-shard act: creating {w.id} -> {response.status}")
        funded = [w for w in self.wallets if w.label != "E"]
        items = [
            {
                "id": f"act-fund-{w.label}",
                "debit_account_id": self.funding,
                "credit_account_id": w.id,
                "amount": FUNDED,
                "currency": self.currency,
            }
            for w in funded
        ]
        response = await self._call("POST", "/v1/transfers/batch", {"transfers": items})
        results = json_of(response).get("results", [])
        answers = [self._item(r) for r in results] or [_problem(response)]
        for w in funded:
            self.contract.posted(self.funding, w.id, FUNDED)
        for w, result in zip(funded, results, strict=False):
            if result.get("status") == "posted":
                self.book.posted(self.funding, w.id, FUNDED)
        await self._step(
            [f"fund A, B, C {_amount(FUNDED)} each"], answers, ["posted"] * len(funded)
        )

    async def _holds(self) -> None:
        a, b = self.ids["A"], self.ids["B"]
        # A hold, then a capture of part of it: the rest is released on both sides.
        hold, part = 4_000, 2_500
        await self._hold("act-hold-1", hold)
        response = await self._call("POST", "/v1/transfers/act-hold-1/post", {"amount": part})
        answer = self._answer(response, "A", "B")
        self.contract.released(a, b, hold)
        self.contract.posted(a, b, part)
        if response.status == 201:
            self.book.released(a, b, hold)
            self.book.posted(a, b, part)
        await self._step(
            [f"capture {_amount(part)} of it", f"({_amount(hold - part)} released)"],
            [answer],
            [f"201 posted {_amount(part)}"],
        )
        # Another hold, voided: released on both sides, nothing posted.
        hold = 1_000
        await self._hold("act-hold-2", hold)
        response = await self._call("POST", "/v1/transfers/act-hold-2/void")
        answer = self._answer(response, "A", "B")
        self.contract.released(a, b, hold)
        if response.status == 201:
            self.book.released(a, b, hold)
        await self._step(["void it"], [answer], [f"201 voided {_amount(hold)}"])

    async def _hold(self, transfer_id: str, hold: int) -> None:
        """Hold ``hold`` from A to B as ``transfer_id`` (pending for 60 s)."""
        a, b = self.ids["A"], self.ids["B"]
        body = self._transfer(transfer_id, "A", "B", hold, pending=True, timeout_seconds=60)
        response = await self._call("POST", "/v1/transfers", body)
        answer = self._answer(response, "A", "B")
        self.contract.held(a, b, hold)
        if response.status == 201:
            self.book.held(a, b, hold)
        await self._step(
            [f"hold A → B {_amount(hold)}"], [answer], [f"201 pending {_amount(hold)}"]
        )

    async def _chain(
        self, prefix: str, legs: list[tuple[str, str, int]], expected: list[str]
    ) -> None:
        items = [
            self._transfer(f"{prefix}-{i}", debit, credit, amount, linked=i < len(legs))
            for i, (debit, credit, amount) in enumerate(legs, start=1)
        ]
        response = await self._call("POST", "/v1/transfers/batch", {"transfers": items})
        results = json_of(response).get("results", [])
        answers = [self._item(r) for r in results] or [_problem(response)]
        for (debit, credit, amount), want in zip(legs, expected, strict=True):
            if want == "posted":
                self.contract.posted(self.ids[debit], self.ids[credit], amount)
        for (debit, credit, amount), result in zip(legs, results, strict=False):
            if result.get("status") == "posted":
                self.book.posted(self.ids[debit], self.ids[credit], amount)
        if "posted" not in expected:  # a chain that failed: none of its transfers exists
            reads = await asyncio.gather(
                *(self._call("GET", f"/v1/transfers/{item['id']}") for item in items)
            )
            answers += [
                f"GET {item['id']} → {read.status}"
                for item, read in zip(items, reads, strict=True)
                if read.status != 404
            ]
        lines = [f"{d} → {c} {_amount(x)}" for d, c, x in legs]
        lines[0] = f"chain {lines[0]}"
        lines[1:] = [f"      {line}" for line in lines[1:]]
        await self._step(lines, answers, expected)

    async def _chains(self) -> None:
        # Over three shards: E, empty, receives 30.00 and passes it on in the same chain.
        await self._chain("act-chain", [("A", "E", 3_000), ("E", "C", 3_000)], ["posted"] * 2)
        # The last item asks E for more than the chain leaves it: nothing happens at all.
        await self._chain(
            "act-fail",
            [("A", "E", 3_000), ("E", "C", 2_000), ("E", "B", 2_000)],
            ["linked_event_failed", "linked_event_failed", "insufficient_funds"],
        )


# -- printing -------------------------------------------------------------------------------


def _cell(counters: Counters, before: Counters | None, want: Counters) -> str:
    """The posted balance, pending counters when not zero, and what came in and went out
    when a wallet did both in one step."""
    dp, dpo, cp, cpo = counters
    text = _amount(cpo - dpo)
    if dp:
        text += f"\ndp {_amount(dp)}"
    if cp:
        text += f"\ncp {_amount(cp)}"
    came, went = (cpo - before[3], dpo - before[1]) if before else (0, 0)
    if came and went:
        text += f"\nin {_amount(came)}\nout {_amount(went)}"
    if counters != want:
        return f"[red]{text} ✗[/]"
    return text if counters != before else f"[dim]{text}[/]"


def print_act(report: CrossShardReport, console: Console) -> None:
    wallets = ", ".join(
        f"{w.label} {w.id} on {w.shard}{' (starts empty)' if w.label == 'E' else ''}"
        for w in report.wallets
    )
    console.print(
        f"\n[bold]cross-shard act[/] ({report.seconds:.2f}s): holds and linked chains between "
        f"wallets on different shards; {wallets}, all no_overdraft"
    )
    table = Table(
        title="each step, then every wallet read back: posted balance, dp/cp = debits/credits "
        "pending",
        title_justify="left",
    )
    table.add_column("step")
    table.add_column("answer")
    for w in report.wallets:
        table.add_column(f"{w.label}\n{w.shard}", justify="right")
    before: dict[str, Counters] = {}
    for step in report.steps:
        want = step.expected_answers
        answers = [
            a if i < len(want) and a == want[i] else f"[red]{a} ✗[/]"
            for i, a in enumerate(step.answers)
        ]
        answers += [f"[red]✗ no answer (contract: {e})[/]" for e in want[len(step.answers) :]]
        # One answer per line beside its item; a batch of a single line on one.
        answer = (", " if len(step.step) == 1 else "\n").join(answers)
        if step.answers[: len(want)] != want:
            answer += f"\n[red](contract: {', '.join(want)})[/]"
        cells = [
            _cell(step.balances[w.label], before.get(w.label), step.expected_balances[w.label])
            for w in report.wallets
        ]
        table.add_row("\n".join(step.step), answer, *cells)
        before = step.balances
    console.print(table)
    if report.ok:
        console.print(
            "[green]✓[/] as on one shard: each hold pending on both sides and released on both "
            "by the partial capture and the void; E passed on in the chain what it received "
            "in it; the failed chain moved nothing and left no transfer"
        )
    else:
        console.print("[red]✗ the cross-shard act broke the contract[/] (see the promises)")
