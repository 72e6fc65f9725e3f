"""The chaos workload: Jepsen's "bank" test, extended for payments, over HTTP.

``Workload`` talks to one or several base URLs (API nodes, round-robin, or one load
balancer). ``setup()`` creates accounts on every shard (ids picked with the topology's
shard map) and funds them from a source account; ``run(until)`` has ``clients``
concurrent clients send a seeded mix until then:

- single transfers (a ``cross_shard_share`` of them between shards) and batches (with,
  now and then, a linked pair on one shard);
- holds (a ``cross_shard_share`` of them between shards), then posted in part or in
  full, voided, left to expire, or posted for more than they hold (a definite refusal);
- linked chains of 2-5 items between random wallets, mostly spanning shards: transfers
  and holds, posts and voids of the chain's own holds, an item often spending what the
  one before gave its debit account, and now and then a last item that must fail (an
  overdraft), which must leave no trace of the whole chain;
- card payments through the simulators' test cards (approved, declined, processing
  error, answer lost), automatic or manual capture, partial and multiple captures,
  cancels, partial refunds;
- payouts from wallets; account reads (their balances are checked against the limits).

Every POST carries an Idempotency-Key. An ambiguous answer (a timeout, a reset, a 5xx,
409 ``idempotency_key_in_use``) is retried with the same key and body, with backoff and
on the next node, until ``op_deadline``; every attempt is recorded (``history``).
``quiesce()`` waits until no cross-shard transfer the run made (or may have made) shows
``in_flight`` and no known payment is in flight, ``final_state()`` reads everything back
through the API for the checker.

Cross-shard holds (posted in part, voided, expired) and linked chains between random
wallets are part of the workload; the checker holds chains to all-or-nothing and a hold's
post to at most its amount.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx
import msgspec

from paycore.chaos.history import Attempt, Call, Outcome, classify, op_outcome
from paycore.chaos.state import FinalState, Json
from paycore.cluster.shardmap import ShardMap
from paycore.ledger.model import DEFAULT_TENANT
from paycore.ledger.tenancy import internal_account_id

__all__ = ["Topology", "Workload", "WorkloadOptions"]

CURRENCY: Final = "USD"
APPROVED: Final = ("4242424242424242", "5555555555554444", "378282246310005")
DECLINED: Final = ("4000000000009995", "4000000000000002", "4000000000009979")
PROCESSING_ERROR: Final = "4000000000000119"
ANSWER_LOST: Final = "4000000000007775"
DESTINATION: Final = "NL91ABNA0417164300"
PAGE: Final = 1000
WEIGHTS: Final = {
    "transfer": 30,
    "batch": 8,
    "hold": 12,
    "chain": 8,
    "payment": 16,
    "payout": 5,
    "read": 10,
}
# What a transfer's status may still change from: work the run waits for in ``quiesce``.
_UNSETTLED: Final = frozenset({"in_flight", "unknown"})

_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """What the workload must know of the cluster: shard names (in slot-map order), the
    processors' names (their ``psp:`` accounts), the shard map itself, and the tenant of
    the workload's API key (the store places its accounts by their ids in its namespace)."""

    shards: tuple[str, ...]
    processors: tuple[str, ...]
    placement: dict[str, str] = {}
    tenant: str = DEFAULT_TENANT

    def shard_map(self) -> ShardMap:
        return ShardMap.even(self.shards)

    def system_accounts(self, currency: str = CURRENCY) -> list[str]:
        from paycore.cluster.settlement import (  # noqa: PLC0415
            clearing_account_id,
            psp_account_id,
        )

        ids = [
            clearing_account_id(a, b, currency) for a in self.shards for b in self.shards if a != b
        ]
        ids += [psp_account_id(s, p, currency) for s in self.shards for p in self.processors]
        return ids


class WorkloadOptions(msgspec.Struct, frozen=True, kw_only=True):
    clients: int = 8
    cross_shard_share: float = 0.3
    wallets_per_shard: int = 6
    merchants_per_shard: int = 2
    funding: int = 20_000
    # Transfers asking for far more than any wallet holds: definite refusals
    # (insufficient_funds / exceeds_credit_limit), so the checker's "refused = no effect"
    # is exercised by real runs, not only by doctored histories.
    overdraft_share: float = 0.03
    request_timeout: float = 5.0
    op_deadline: float = 40.0
    seed: int = 0
    weights: dict[str, int] = msgspec.field(default_factory=lambda: dict(WEIGHTS))


class _Answer(msgspec.Struct, frozen=True):
    outcome: Outcome
    status: int | None
    body: Any


class Workload:
    """See the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        topology: Topology,
        options: WorkloadOptions,
        *,
        tag: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self.topology = topology
        self.options = options
        self.tag = tag
        self.history: list[Attempt] = []
        self._op = 0
        self._ids = 0
        self.rng = random.Random(options.seed)  # noqa: S311 - a reproducible mix
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(options.request_timeout, connect=2.0),
            limits=httpx.Limits(max_connections=options.clients * 4 + 8),
            headers=headers,
        )
        self.wallets: dict[str, list[str]] = {}  # shard -> ids
        self.merchants: list[str] = []
        self.history_accounts: list[str] = []
        self.source = f"{tag}.src"
        self.payments: dict[str, str] = {}  # id -> last status seen
        self.refunds: dict[str, str] = {}
        self.payouts: dict[str, str] = {}
        self.baseline: dict[str, Json] = {}  # system accounts before the run
        # Cross-shard transfers (holds, posts and voids included) the run made or may have
        # made -> last status seen ("unknown": the answer was lost).
        self.cross: dict[str, str] = {}

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing ------------------------------------------------------------------

    def new_id(self, letter: str) -> str:
        self._ids += 1
        return f"{self.tag}.{letter}{self._ids}"

    async def call(
        self, client: int, kind: str, method: str, path: str, body: Json | None = None
    ) -> _Answer:
        """One operation: attempts until a definite answer or the deadline (module doc)."""
        self._op += 1
        op = self._op
        key = f"{self.tag}-{op}" if method == "POST" else None
        request = Call(method=method, path=path, body=body, idempotency_key=key)
        headers = {"Idempotency-Key": key} if key else {}
        content = None if body is None else _encode(body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        start = time.monotonic()
        attempts: list[Attempt] = []
        n = 0
        while True:
            n += 1
            node = self.urls[(client + op + n) % len(self.urls)]
            invoke_mono, invoke_wall = time.monotonic(), time.time()
            status: int | None = None
            response: Any = None
            error: str | None = None
            replayed = False
            try:
                r = await self.http.request(method, node + path, content=content, headers=headers)
                status = r.status_code
                replayed = r.headers.get("idempotent-replayed") == "true"
                try:
                    response = _decode.decode(r.content) if r.content else None
                except msgspec.DecodeError:
                    response = r.text[:500]
                code = response.get("code") if isinstance(response, dict) else None
                outcome = classify(status, code if isinstance(code, str) else None)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = f"{type(exc).__name__}: {exc}"
                outcome = classify(None, None, connected=False)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                outcome = classify(None, None, connected=True)
            attempt = Attempt(
                op=op,
                client=client,
                kind=kind,
                attempt=n,
                request=request,
                invoke_mono=invoke_mono,
                invoke_wall=invoke_wall,
                complete_mono=time.monotonic(),
                complete_wall=time.time(),
                outcome=outcome,
                node=node,
                status=status,
                response=response,
                error=error,
                replayed=replayed,
            )
            self.history.append(attempt)
            attempts.append(attempt)
            if outcome is Outcome.OK or (outcome is Outcome.FAIL and status is not None):
                return _Answer(outcome, status, response)
            if time.monotonic() - start > self.options.op_deadline:
                return _Answer(op_outcome(attempts), status, response)
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(n, 5)) * (0.5 + self.rng.random()))

    # -- setup ---------------------------------------------------------------------

    def _ids_on(self, shard: str, prefix: str, n: int) -> list[str]:
        shard_map = self.topology.shard_map()
        found: list[str] = []
        i = 0
        while len(found) < n:
            candidate = f"{self.tag}.{prefix}{shard}.{i}"
            stored = internal_account_id(self.topology.tenant, candidate)
            if shard_map.shard_for(stored) == shard:
                found.append(candidate)
            i += 1
        return found

    async def setup(self) -> None:
        """Accounts on every shard, the wallets funded from the source."""
        o = self.options
        for account_id in self.topology.system_accounts():
            found = await self._get(f"/v1/accounts/{account_id}")
            if found is not None:
                self.baseline[account_id] = found
        await self._create(self.source, {})
        for shard in self.topology.shards:
            wallets = self._ids_on(shard, "w", o.wallets_per_shard)
            self.wallets[shard] = wallets
            for i, wallet in enumerate(wallets):
                flags: Json = {"no_overdraft": True} if i else {"credit_limit": 500}
                if i % 3 == 1:
                    flags["history"] = True
                    self.history_accounts.append(wallet)
                await self._create(wallet, flags)
            for merchant in self._ids_on(shard, "m", o.merchants_per_shard):
                self.merchants.append(merchant)
                await self._create(merchant, {})
        for wallet in self.all_wallets:
            body = {
                "id": self.new_id("f"),
                "debit_account_id": self.source,
                "credit_account_id": wallet,
                "amount": o.funding,
                "currency": CURRENCY,
            }
            answer = await self.call(0, "fund", "POST", "/v1/transfers", body)
            if answer.outcome is not Outcome.OK:
                raise RuntimeError(f"funding {wallet}: {answer.status} {answer.body}")

    async def _create(self, account_id: str, flags: Json) -> None:
        body = {"id": account_id, "currency": CURRENCY, "flags": flags}
        answer = await self.call(0, "account", "POST", "/v1/accounts", body)
        if answer.outcome is not Outcome.OK:
            raise RuntimeError(f"creating {account_id}: {answer.status} {answer.body}")

    @property
    def all_wallets(self) -> list[str]:
        return [w for ws in self.wallets.values() for w in ws]

    @property
    def accounts(self) -> list[str]:
        return [self.source, *self.all_wallets, *self.merchants]

    # -- the mix -------------------------------------------------------------------

    async def run(self, until: float) -> None:
        """Clients send the mix until ``until`` (monotonic); each finishes its last op."""
        await asyncio.gather(*(self._client(i, until) for i in range(self.options.clients)))

    async def _client(self, client: int, until: float) -> None:
        rng = random.Random(self.options.seed * 1000 + client)  # noqa: S311
        kinds = list(self.options.weights)
        weights = [self.options.weights[k] for k in kinds]
        while time.monotonic() < until:
            kind = rng.choices(kinds, weights)[0]
            await getattr(self, f"_{kind}")(client, rng)

    def _pair(self, rng: random.Random, *, cross: bool | None = None) -> tuple[str, str]:
        shards = list(self.wallets)
        if cross is None:
            cross = len(shards) > 1 and rng.random() < self.options.cross_shard_share
        a_shard = rng.choice(shards)
        a = rng.choice(self.wallets[a_shard])
        if cross:
            b = rng.choice(self.wallets[rng.choice([s for s in shards if s != a_shard])])
        else:
            b = rng.choice([w for w in self.wallets[a_shard] if w != a])
        return a, b

    def _transfer_body(self, rng: random.Random, *, cross: bool | None = None) -> Json:
        a, b = self._pair(rng, cross=cross)
        return {
            "id": self.new_id("t"),
            "debit_account_id": a,
            "credit_account_id": b,
            "amount": (
                self.options.funding * 100
                if rng.random() < self.options.overdraft_share
                else rng.randint(1, 400)
            ),
            "currency": CURRENCY,
        }

    def _crosses(self, debit: str, credit: str) -> bool:
        shard_map = self.topology.shard_map()
        return shard_map.shard_for(debit) != shard_map.shard_for(credit)

    def _note(self, items: Sequence[Json], answer: _Answer, holds: Mapping[str, Json]) -> None:
        """Remember the cross-shard ones among ``items`` (sent in one request) and the
        status each was answered with; ``holds``: the holds posts and voids name."""
        results: list[Any] = []
        if answer.outcome is Outcome.OK:
            body = answer.body
            if isinstance(body, dict) and isinstance(body.get("results"), list):
                results = body["results"]
            elif isinstance(body, dict):
                results = [body]
        for i, item in enumerate(items):
            hold = holds.get(str(item.get("pending_id")))
            debit = item.get("debit_account_id") or (hold or {}).get("debit_account_id")
            credit = item.get("credit_account_id") or (hold or {}).get("credit_account_id")
            if not (debit and credit and self._crosses(str(debit), str(credit))):
                continue
            if answer.outcome is Outcome.INFO:
                self.cross[str(item["id"])] = "unknown"
            elif i < len(results) and isinstance(results[i], dict) and "status" in results[i]:
                self.cross[str(item["id"])] = str(results[i]["status"])

    async def _transfer(self, client: int, rng: random.Random) -> None:
        body = self._transfer_body(rng)
        answer = await self.call(client, "transfer", "POST", "/v1/transfers", body)
        self._note([body], answer, {})

    async def _batch(self, client: int, rng: random.Random) -> None:
        items = [self._transfer_body(rng) for _ in range(rng.randint(2, 5))]
        if rng.random() < 0.3:
            first = {**self._transfer_body(rng, cross=False), "linked": True}
            items += [first, self._transfer_body(rng, cross=False)]
        answer = await self.call(
            client, "batch", "POST", "/v1/transfers/batch", {"transfers": items}
        )
        self._note(items, answer, {})

    async def _hold(self, client: int, rng: random.Random) -> None:
        a, b = self._pair(rng)
        amount = rng.randint(2, 400)
        fate = rng.choices(
            ["post_part", "post_all", "void", "expire", "post_over"], [45, 15, 25, 15, 5]
        )[0]
        hold = {
            "id": self.new_id("h"),
            "debit_account_id": a,
            "credit_account_id": b,
            "amount": amount,
            "currency": CURRENCY,
            "pending": True,
            "timeout_seconds": 2 if fate == "expire" else 60,
        }
        answer = await self.call(client, "hold", "POST", "/v1/transfers", hold)
        self._note([hold], answer, {})
        if fate == "expire" or answer.outcome is Outcome.FAIL:
            return
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        path = f"/v1/transfers/{hold['id']}"
        holds = {str(hold["id"]): hold}
        if fate == "void":
            body: Json = {"id": self.new_id("v")}
            answer = await self.call(client, "void", "POST", f"{path}/void", body)
            self._note([{**body, "pending_id": hold["id"]}], answer, holds)
            return
        body = {"id": self.new_id("p")}
        if fate == "post_part":
            body["amount"] = rng.randint(1, amount - 1)
        elif fate == "post_over":  # refused: amount_exceeds_pending_amount
            body["amount"] = amount + rng.randint(1, 50)
        answer = await self.call(client, "post", "POST", f"{path}/post", body)
        self._note([{**body, "pending_id": hold["id"]}], answer, holds)

    def _chain_items(self, rng: random.Random) -> list[Json]:
        """A linked chain (see the module docstring): every item but the last ``linked``."""
        items: list[Json] = []
        holds: list[Json] = []
        last_credit: str | None = None
        for _ in range(rng.randint(2, 4)):
            if last_credit is not None and rng.random() < 0.5:
                a = last_credit  # spends what the chain just gave it
                b = rng.choice([w for w in self.all_wallets if w != a])
            else:
                a, b = self._pair(rng, cross=rng.random() < 0.7)
            kind = rng.choices(["plain", "hold", "resolve"], [55, 20, 25])[0]
            if kind == "resolve" and holds:
                hold = holds.pop(rng.randrange(len(holds)))
                item: Json = {"id": self.new_id("k"), "pending_id": hold["id"]}
                if rng.random() < 0.7:
                    item["post_pending"] = True
                    item["amount"] = rng.randint(1, int(hold["amount"]))
                else:
                    item["void_pending"] = True
                items.append(item)
                continue
            item = {
                "id": self.new_id("k"),
                "debit_account_id": a,
                "credit_account_id": b,
                "amount": rng.randint(1, 300),
                "currency": CURRENCY,
            }
            if kind != "plain":
                item.update(pending=True, timeout_seconds=60)
                holds.append(item)
            items.append(item)
            last_credit = b
        if rng.random() < 0.25:  # an overdraft at the end: the whole chain must fail
            items.append({**self._transfer_body(rng), "amount": self.options.funding * 100})
        for item in items[:-1]:
            item["linked"] = True
        return items

    async def _chain(self, client: int, rng: random.Random) -> None:
        items = self._chain_items(rng)
        answer = await self.call(
            client, "chain", "POST", "/v1/transfers/batch", {"transfers": items}
        )
        holds = {str(i["id"]): i for i in items if i.get("pending")}
        self._note(items, answer, holds)

    def _card(self, rng: random.Random) -> Json:
        draw = rng.random()
        if draw < 0.85:
            number = rng.choice(APPROVED)
        elif draw < 0.93:
            number = rng.choice(DECLINED)
        elif draw < 0.97:
            number = PROCESSING_ERROR
        else:
            number = ANSWER_LOST
        cvc = "1234" if number.startswith(("34", "37")) else "123"
        year = time.gmtime().tm_year + 3
        return {"number": number, "exp_month": 12, "exp_year": year, "cvc": cvc}

    def _seen(self, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            pid = body["id"]
            if pid.startswith("pay"):
                self.payments[pid] = str(body.get("status"))

    async def _payment(self, client: int, rng: random.Random) -> None:
        manual = rng.random() < 0.5
        amount = rng.randint(100, 5000)
        body = {
            "amount": amount,
            "currency": CURRENCY,
            "merchant_account_id": rng.choice(self.merchants),
            "capture": "manual" if manual else "automatic",
            "source": {"card": self._card(rng)},
        }
        answer = await self.call(client, "payment", "POST", "/v1/payments", body)
        if answer.outcome is not Outcome.OK:
            return
        payment = answer.body
        self._seen(payment)
        pid = payment["id"]
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        if payment["status"] == "requires_capture":
            if rng.random() < 0.2:
                answer = await self.call(client, "cancel", "POST", f"/v1/payments/{pid}/cancel")
                self._seen(answer.body)
                return
            left = int(payment["amount_capturable"])
            for _ in range(rng.choice([1, 1, 2])):
                if left <= 0:
                    break
                x = rng.randint(1, left)
                answer = await self.call(
                    client, "capture", "POST", f"/v1/payments/{pid}/capture", {"amount": x}
                )
                self._seen(answer.body)
                if answer.outcome is not Outcome.OK:
                    return
                payment = answer.body
                left = int(payment.get("amount_capturable") or 0)
        if payment.get("status") == "succeeded" and rng.random() < 0.5:
            captured = int(payment["amount_captured"])
            for _ in range(rng.choice([1, 2])):
                x = rng.randint(1, max(1, captured // 2))
                answer = await self.call(
                    client, "refund", "POST", "/v1/refunds", {"payment_id": pid, "amount": x}
                )
                if answer.outcome is Outcome.OK and isinstance(answer.body, dict):
                    self.refunds[answer.body["id"]] = answer.body["status"]

    async def _payout(self, client: int, rng: random.Random) -> None:
        body = {
            "wallet_account_id": rng.choice(self.all_wallets),
            "amount": rng.randint(1, 300),
            "currency": CURRENCY,
            "destination": DESTINATION,
        }
        answer = await self.call(client, "payout", "POST", "/v1/payouts", body)
        if answer.outcome is Outcome.OK and isinstance(answer.body, dict):
            self.payouts[answer.body["id"]] = answer.body["status"]

    async def _read(self, client: int, rng: random.Random) -> None:
        await self.call(client, "read", "GET", f"/v1/accounts/{rng.choice(self.all_wallets)}")

    # -- the end -------------------------------------------------------------------

    async def _get(self, path: str) -> Json | None:
        """A read with retries, not recorded; None for a 404."""
        deadline = time.monotonic() + 60.0
        i = 0
        while True:
            node = self.urls[i % len(self.urls)]
            i += 1
            try:
                r = await self.http.get(node + path)
                if r.status_code == 404:
                    return None
                if r.status_code == 200:
                    body: Json = r.json()
                    return body
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {path}: no answer within 60 s")
            await asyncio.sleep(0.2)

    async def open_work(self) -> list[str]:
        """What is still in flight: the run's cross-shard transfers whose last status was
        ``in_flight`` or unknown (re-read at every pass; one not found is not open), and
        the payments, refunds and payouts last seen processing.

        Judged by the transfers' own status, not by money pending on clearing accounts:
        a cross-shard hold may well keep money pending there for as long as it is open.
        A saga the run does not know of and still in flight at the end shows in the
        listings, where the checker reports it."""
        still: list[str] = []
        for transfer_id, status in list(self.cross.items()):
            if status not in _UNSETTLED:
                continue
            found = await self._get(f"/v1/transfers/{transfer_id}")
            if found is None:  # not there (yet: a lost request may still land); not open
                continue
            self.cross[transfer_id] = str(found["status"])
            if self.cross[transfer_id] in _UNSETTLED:
                still.append(transfer_id)
        for table, path, busy in (
            (self.payments, "/v1/payments/", "processing"),
            (self.refunds, "/v1/refunds/", "pending"),
            (self.payouts, "/v1/payouts/", "processing"),
        ):
            for oid, status in list(table.items()):
                if status != busy:
                    continue
                now = await self._get(path + oid)
                table[oid] = str(now["status"]) if now is not None else "missing"
                if table[oid] == busy:
                    still.append(oid)
        return still

    async def quiesce(self, bound: float) -> tuple[bool, float, list[str]]:
        """Wait until nothing is in flight, at most ``bound`` seconds: (quiet, waited,
        what is still open)."""
        start = time.monotonic()
        while True:
            still = await self.open_work()
            waited = time.monotonic() - start
            if not still or waited > bound:
                return not still, waited, still
            await asyncio.sleep(0.5)

    async def _pages(self, path: str) -> list[Json]:
        items: list[Json] = []
        cursor: str | None = None
        while True:
            query = f"?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
            page = await self._get(path + query)
            if page is None:
                return items
            items += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                return items

    async def final_state(self) -> FinalState:
        """Everything back through the API (see ``FinalState``); each account and its
        listing read until the account did not change around the listing, and the whole
        set read again until no balance changed between two passes.

        The accounts are read one by one: a step that lands between two reads (the relay
        voiding a cross-shard hold's credit leg after its source expired it, on the
        target's shard: the credited account read before, its clearing account after)
        would show money that no single moment of the ledger held."""
        for _ in range(10):
            state = await self._read_accounts()
            if await self._balances_unchanged(state):
                break
            await asyncio.sleep(1.0)
        await self._read_the_rest(state)
        return state

    async def _balances_unchanged(self, state: FinalState) -> bool:
        for account_id, account in state.accounts.items():
            now = await self._get(f"/v1/accounts/{account_id}")
            if now is None or now["balance"] != account["balance"]:
                return False
        return True

    async def _read_accounts(self) -> FinalState:
        state = FinalState(baseline=dict(self.baseline))
        for account_id in [*self.accounts, *self.topology.system_accounts()]:
            for _ in range(5):
                before = await self._get(f"/v1/accounts/{account_id}")
                if before is None:
                    break
                listing = await self._pages(f"/v1/accounts/{account_id}/transfers")
                after = await self._get(f"/v1/accounts/{account_id}")
                if after is not None and after["balance"] == before["balance"]:
                    state.accounts[account_id] = after
                    state.transfers[account_id] = listing
                    break
        return state

    async def _read_the_rest(self, state: FinalState) -> None:
        for account_id in self.history_accounts:
            state.balance_history[account_id] = await self._pages(
                f"/v1/accounts/{account_id}/balances"
            )
        ids = self._known_ids()
        for table, path, target in (
            (ids["payments"], "/v1/payments/", state.payments),
            (ids["refunds"], "/v1/refunds/", state.refunds),
            (ids["payouts"], "/v1/payouts/", state.payouts),
        ):
            for oid in sorted(table):
                found = await self._get(path + oid)
                if found is not None:
                    target[oid] = found

    def _known_ids(self) -> dict[str, set[str]]:
        """Every payment, refund and payout id an answer of the run named."""
        ids: dict[str, set[str]] = {"payments": set(), "refunds": set(), "payouts": set()}
        for a in self.history:
            body = a.response
            if a.outcome is not Outcome.OK or not isinstance(body, dict):
                continue
            path = a.request.path
            if path.startswith("/v1/payments") and "id" in body:
                ids["payments"].add(str(body["id"]))
            elif path == "/v1/refunds":
                ids["refunds"].add(str(body["id"]))
                ids["payments"].add(str(body["payment_id"]))
            elif path == "/v1/payouts":
                ids["payouts"].add(str(body["id"]))
        return ids
