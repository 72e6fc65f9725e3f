"""Error details say what is wrong in words a client can act on: an id's rule, not a raw
regular expression; a currency mismatch names the side that differs, on one shard or
across two."""

from __future__ import annotations

import tempfile
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.conftest import ClientFactory
from api.routes import PROCESSOR, signed_headers
from api.support import Api, assert_problem
from backends import AnyStore
from paycore.api import create_app
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import ErrorCode
from paycore.ledger.model import AccountRequest, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers

ID_WORDS = "1-64 characters: letters, digits, '_', '.', ':', '-'"
GOOD = {"id": "t1", "debit_account_id": "a", "credit_account_id": "b", "amount": 1,
        "currency": "USD"}  # fmt: skip

BAD_IDS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/transfers", {**GOOD, "id": "t 1"}, "$.id"),
    ("/v1/transfers", {**GOOD, "credit_account_id": "b/1"}, "$.credit_account_id"),
    ("/v1/accounts", {"id": "x" * 65, "currency": "USD"}, "$.id"),
    ("/v1/transfers/batch", {"transfers": [{**GOOD, "id": "é"}]}, "$.transfers[0].id"),
    ("/v1/transfers/h/post", {"id": "p 1"}, "$.id"),
    ("/v1/refunds", {"payment_id": "pay 1"}, "$.payment_id"),
    ("/v1/payouts", {"wallet_account_id": "w 1", "amount": 1, "currency": "USD",
                     "destination": "DE00123456789"}, "$.wallet_account_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "where"), BAD_IDS, ids=[f"{p}:{w}" for p, _, w in BAD_IDS]
)
async def test_a_bad_id_is_explained_in_words(
    api: Api, path: str, body: dict[str, Any], where: str
) -> None:
    problem = assert_problem(await api.client.post(path, json=body), ErrorCode.INVALID_REQUEST)
    assert problem["detail"] == f"Expected `str` of {ID_WORDS} - at `{where}`"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/transfers", {**GOOD, "currency": "usd"}, "3 capital letters (an ISO 4217 code)"),
        ("/v1/payouts", {"wallet_account_id": "w", "amount": 1, "currency": "USD",
                         "destination": "de-1"}, "8-34 capital letters or digits"),
    ],
)  # fmt: skip
async def test_other_patterns_are_explained_in_words(
    api: Api, path: str, body: dict[str, Any], words: str
) -> None:
    problem = assert_problem(await api.client.post(path, json=body), ErrorCode.INVALID_REQUEST)
    assert words in problem["detail"]
    assert "regex" not in problem["detail"]


async def test_a_processors_event_with_a_bad_id_is_explained_in_words(
    open_client: ClientFactory,
) -> None:
    async with open_client(processors=(PROCESSOR,)) as client:
        raw = b'{"id": "evt 1", "type": "a.b"}'
        headers = {**signed_headers("{processor}", raw), "content-type": "application/json"}
        response = await client.post(f"/v1/processor_events/{PROCESSOR.name}", content=raw,
                                     headers=headers)  # fmt: skip
    problem = assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert "1-255 printable ASCII characters without spaces" in problem["detail"]
    assert "regex" not in problem["detail"]


async def test_the_ledger_explains_a_bad_id_in_words(store: AnyStore) -> None:
    """Below the API (a command built by hand, or by another tool), the same words."""
    await store.start()
    try:
        (account,) = await store.execute(CreateAccounts((AccountRequest("a b", "USD"),)))
        (transfer,) = await store.execute(
            CreateTransfers((TransferRequest(id="t 1", debit_account_id="a",
                             credit_account_id="b", amount=1, currency="USD"),))
        )  # fmt: skip
    finally:
        await store.stop()
    assert account.detail == f"id must be {ID_WORDS}"
    assert transfer.detail == f"id must be {ID_WORDS}"


# -- currency_mismatch names the side that differs ---------------------------------------


async def _mismatch(debit_currency: str, credit_currency: str, currency: str,
                    *, shards: int) -> str:  # fmt: skip
    """The detail of a transfer in ``currency`` from a ``debit_currency`` account to a
    ``credit_currency`` one, whose accounts are on one shard or two."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=tmp, embedded_shards=2, auth="open")
        store = build_store(settings)
        a = next(f"a{i}" for i in range(99) if store.shard_for(f"a{i}") == "shard-0")
        b = next(
            f"b{i}" for i in range(99)
            if store.shard_for(f"b{i}") == ("shard-1" if shards == 2 else "shard-0")
        )  # fmt: skip
        async with AsyncTestClient(app=create_app(store, settings, start_workers=False)) as c:
            api = Api(c)
            await api.account(a, debit_currency)
            await api.account(b, credit_currency)
            body = {**GOOD, "debit_account_id": a, "credit_account_id": b, "currency": currency}
            response = await c.post("/v1/transfers", content=msgspec.json.encode(body),
                                    headers={"content-type": "application/json"})  # fmt: skip
            problem = assert_problem(response, ErrorCode.CURRENCY_MISMATCH)
            detail: str = problem["detail"]
            return detail


@pytest.mark.parametrize("shards", [1, 2])
async def test_a_currency_mismatch_names_the_side_that_differs(shards: int) -> None:
    """USD -> EUR in USD: the credit account is the one in EUR, not "the accounts"."""
    detail = await _mismatch("USD", "EUR", "USD", shards=shards)
    assert "credit account is EUR" in detail, detail
    assert "accounts are" not in detail, detail


@pytest.mark.parametrize("shards", [1, 2])
async def test_a_currency_mismatch_with_both_accounts_alike_names_the_transfer(
    shards: int,
) -> None:
    detail = await _mismatch("EUR", "EUR", "USD", shards=shards)
    assert detail.startswith("transfer is USD"), detail
    assert "EUR" in detail, detail
