"""The process test_crash kills: it writes batches to a SQLiteStore and acknowledges each.

Usage: ``python crash_child.py DB_PATH ROUND``

Prints ``ready`` once its accounts exist, then ``ack <index>`` for every batch,
flushed, only after ``execute_idempotent`` returned (the batch is committed and
fsynced). Four batches are in flight at any time, so the writer groups them. It
runs until it is killed. The batches are a pure function of (round, index), so the
parent can rebuild them to check what must, or must not, be in the file.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import msgspec

from paycore.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers, Idempotency, StoredResponse
from paycore.storage.sqlite import SQLiteStore

BATCH_SIZE = 200
IN_FLIGHT = 4
USD = [f"usd{i}" for i in range(8)]
EUR = [f"eur{i}" for i in range(4)]
ACCOUNTS = tuple(
    AccountRequest(i, "USD" if i in USD else "EUR", flags=AccountFlags(history=i.endswith("0")))
    for i in USD + EUR
)
_encoder = msgspec.json.Encoder()


def batch_key(round_no: int, index: int) -> str:
    return f"r{round_no}.b{index}"


def make_batch(round_no: int, index: int) -> tuple[tuple[TransferRequest, ...], set[str]]:
    """Batch ``index`` of round ``round_no``, and the ids it creates when committed.

    Plain transfers, linked chains that succeed, a hold with its post or void, and
    one linked chain that always fails (its last item names a missing account), so
    a committed batch has a known, exact set of transfers.
    """
    rng = random.Random(f"{round_no}/{index}")
    prefix = batch_key(round_no, index)
    items: list[TransferRequest] = []
    created: set[str] = set()

    def add(request: TransferRequest, *, lands: bool = True) -> None:
        items.append(request)
        if lands:
            created.add(request.id)

    def pair() -> tuple[str, str]:
        return tuple(rng.sample(rng.choice([USD, EUR]), 2))  # type: ignore[return-value]

    while len(items) < BATCH_SIZE - 10:
        n = len(items)
        kind = rng.random()
        if kind < 0.15:  # a linked chain of 2-5 that succeeds
            size = rng.randint(2, 5)
            for k in range(size):
                debit, credit = pair()
                flags = TransferFlags(linked=k < size - 1)
                add(
                    TransferRequest(
                        f"{prefix}.i{n + k}", debit, credit, rng.randint(1, 99), flags=flags
                    )
                )
        elif kind < 0.25:  # a hold, then its capture or release in the same batch
            debit, credit = pair()
            amount = rng.randint(2, 99)
            add(
                TransferRequest(
                    f"{prefix}.i{n}", debit, credit, amount, flags=TransferFlags(pending=True)
                )
            )
            resolve = (
                TransferFlags(post_pending=True)
                if rng.random() < 0.5
                else TransferFlags(void_pending=True)
            )
            post_amount = rng.randint(1, amount) if resolve.post_pending else None
            add(
                TransferRequest(
                    f"{prefix}.i{n + 1}",
                    pending_id=f"{prefix}.i{n}",
                    amount=post_amount,
                    flags=resolve,
                )
            )
        else:
            debit, credit = pair()
            add(TransferRequest(f"{prefix}.i{n}", debit, credit, rng.randint(1, 999)))
    n = len(items)  # a chain that must fail as a whole
    add(
        TransferRequest(f"{prefix}.i{n}", USD[0], USD[1], 5, flags=TransferFlags(linked=True)),
        lands=False,
    )
    add(TransferRequest(f"{prefix}.i{n + 1}", USD[1], "missing", 5), lands=False)
    return tuple(items), created


def render(result: Any) -> StoredResponse:
    return StoredResponse(200, _encoder.encode(result))


async def main(path: str, round_no: int) -> None:
    store = SQLiteStore(path)
    await store.start()
    await store.execute(CreateAccounts(ACCOUNTS))
    print("ready", flush=True)
    indexes = iter(range(10**9))

    async def writer() -> None:
        for index in indexes:
            requests, created = make_batch(round_no, index)
            key = batch_key(round_no, index)
            response, _ = await store.execute_idempotent(
                CreateTransfers(requests), Idempotency(key, key, render)
            )
            results = msgspec.json.decode(response.body)
            landed = {r["id"] for r in results if r["code"] is None}
            if landed != created:
                print(f"wrong {index}: {sorted(landed ^ created)[:5]}", flush=True)
                raise SystemExit(1)
            print(f"ack {index}", flush=True)

    await asyncio.gather(*(writer() for _ in range(IN_FLIGHT)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
