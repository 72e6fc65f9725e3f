"""``paycore cluster add-shard`` on the running HA cluster, under write load through nginx:
a third replicated shard starts, the API nodes restart one at a time to know it, a third
of the slots move onto it, and no request fails other than with a retryable 503 that
succeeds on retry; every acknowledged transfer is in the ledger, the audit is clean.

Runs last among the HA tests (it grows the session's cluster)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx
import pytest

from paycore.cluster.shardmap import slot_of
from paycore.tools.local_cluster.control import LocalCluster

pytestmark = pytest.mark.slow

ACCOUNTS = 24
RETRYABLE = (502, 503, 504)


async def _load(
    cluster: LocalCluster,
    stop: asyncio.Event,
    statuses: Counter[int],
    acked: dict[str, tuple[str, str, int]],
) -> None:
    """One client: transfers between random accounts, each retried with its key until a
    definite answer; every status met is counted."""
    headers = cluster.headers
    async with httpx.AsyncClient(base_url=cluster.url, headers=headers, timeout=30) as http:
        n = 0
        while not stop.is_set():
            n += 1
            debit, credit = f"rs-{n % ACCOUNTS}", f"rs-{(n * 7 + 3) % ACCOUNTS}"
            if debit == credit:
                continue
            transfer_id, amount = f"rs-{uuid.uuid4().hex[:16]}", 1 + n % 9
            body = {"id": transfer_id, "debit_account_id": debit, "credit_account_id": credit,
                    "amount": amount, "currency": "USD"}  # fmt: skip
            key = {"Idempotency-Key": transfer_id}
            answer = None
            for _ in range(400):
                try:
                    answer = await http.post("/v1/transfers", json=body, headers=key)
                except httpx.TransportError:
                    statuses[0] += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[answer.status_code] += 1
                if answer.status_code not in RETRYABLE:
                    break
                await asyncio.sleep(0.05)
            else:
                statuses[-1] += 1  # never a definite answer: fails the test
            if answer is not None and answer.status_code == 201:
                acked[transfer_id] = (debit, credit, amount)


def test_add_shard_under_load_balances_the_slots_and_loses_nothing(
    ha_cluster: LocalCluster,
) -> None:
    for i in range(ACCOUNTS):
        made = httpx.post(
            f"{ha_cluster.url}/v1/accounts",
            json={"id": f"rs-{i}", "currency": "USD"},
            headers=ha_cluster.headers,
            timeout=10,
        )
        assert made.status_code in (200, 201), made.text
    # A hold that stays pending (as an authorized card payment's would) between accounts
    # in the slots a plain balance would move (the top third of each shard's): those
    # slots stay where they are, others move instead.
    pinned = {
        "s0": next(f"rs-h{i}" for i in range(10**6) if 1400 <= slot_of(f"rs-h{i}") <= 2000),
        "s1": next(f"rs-h{i}" for i in range(10**6) if 3500 <= slot_of(f"rs-h{i}") <= 4000),
    }
    for account_id in pinned.values():
        made = httpx.post(
            f"{ha_cluster.url}/v1/accounts",
            json={"id": account_id, "currency": "USD"},
            headers=ha_cluster.headers,
            timeout=10,
        )
        assert made.status_code in (200, 201), made.text
    held = httpx.post(
        f"{ha_cluster.url}/v1/transfers",
        json={"id": f"rs-hold-{uuid.uuid4().hex[:8]}", "debit_account_id": pinned["s0"],
              "credit_account_id": pinned["s1"], "amount": 5, "currency": "USD",
              "pending": True, "timeout_seconds": 3600},
        headers=ha_cluster.headers,
        timeout=10,
    )  # fmt: skip
    assert held.status_code == 201, held.text
    statuses: Counter[int] = Counter()
    acked: dict[str, tuple[str, str, int]] = {}

    async def scenario() -> subprocess.CompletedProcess[str]:
        stop = asyncio.Event()
        clients = [asyncio.create_task(_load(ha_cluster, stop, statuses, acked)) for _ in range(4)]
        await asyncio.sleep(2.0)
        started = time.monotonic()
        grown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "paycore", "cluster", "add-shard",
             "--data-dir", str(ha_cluster.layout.root)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        print(f"\n[add-shard] {time.monotonic() - started:.1f} s\n{grown.stdout}")
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*clients)
        return grown

    grown = asyncio.run(scenario())
    assert grown.returncode == 0, (grown.stdout, grown.stderr)
    print(f"[add-shard] statuses met: {dict(statuses)}")
    assert set(statuses) <= {201, *RETRYABLE, 0}, statuses  # 0: a reset, retried
    assert statuses[201] == len(acked) > 50
    status = subprocess.run(
        [sys.executable, "-m", "paycore", "shards", "status", "--json",
         "--config", str(ha_cluster.layout.node_config)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = httpx.Response(200, content=status.stdout).json()
    counts = {s["name"]: s["slot_count"] for s in report["shards"]}
    assert sorted(counts) == ["s0", "s1", "s2"], counts
    assert max(counts.values()) - min(counts.values()) <= 2, counts
    for shard, account_id in pinned.items():  # the held accounts did not move
        ranges = next(x["slots"] for x in report["shards"] if x["name"] == shard)
        slot = slot_of(account_id)
        assert any(lo <= slot <= hi for lo, hi in ranges), (account_id, slot, ranges)
    # Every acknowledged transfer is stored, once, with its amount.
    for transfer_id, (_, _, amount) in list(acked.items())[:200]:
        got = httpx.get(
            f"{ha_cluster.url}/v1/transfers/{transfer_id}", headers=ha_cluster.headers, timeout=10
        )
        assert got.status_code == 200, got.text
        assert got.json()["amount"] == amount
    expected = dict.fromkeys((f"rs-{i}" for i in range(ACCOUNTS)), 0)
    for debit, credit, amount in acked.values():
        expected[debit] -= amount
        expected[credit] += amount
    for account_id, balance in expected.items():
        got = httpx.get(
            f"{ha_cluster.url}/v1/accounts/{account_id}", headers=ha_cluster.headers, timeout=10
        ).json()["balance"]
        assert int(got["credits_posted"]) - int(got["debits_posted"]) == balance, account_id
    audit = subprocess.run(
        [sys.executable, "-m", "paycore", "audit", "--config", str(ha_cluster.layout.node_config)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout[-3000:]
