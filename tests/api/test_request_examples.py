"""Every operation that takes a body shows named example bodies in the OpenAPI document,
from one table (``paycore.api.request_examples``), and each example is a body its
handler accepts: it decodes strictly into the operation's body type."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from paycore.api.request_examples import REQUEST_EXAMPLES
from paycore.api.routes._docs import documented_types

JSON = "application/json"


def _bodies(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request body of each operation that has one, by ``"METHOD /path"``."""
    return {
        f"{method.upper()} {path}": operation["requestBody"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    }


async def test_the_table_names_exactly_the_operations_that_take_a_body(
    document: dict[str, Any],
) -> None:
    """No operation with a body lacks examples, and the table names no other."""
    assert set(_bodies(document)) == set(REQUEST_EXAMPLES)


async def test_each_body_shows_the_tables_examples(document: dict[str, Any]) -> None:
    """The document's examples of a body are the table's, each with a summary."""
    for name, body in _bodies(document).items():
        shown = body["content"][JSON]["examples"]
        expected = {
            key: {"summary": summary, "value": value}
            for key, (summary, value) in REQUEST_EXAMPLES[name].items()
        }
        assert shown == expected, name
        assert all(example["summary"] for example in shown.values()), name


async def test_each_example_decodes_into_the_operations_body_type(
    document: dict[str, Any],
) -> None:
    """Each example is accepted by the strict decoder the handler uses (msgspec, the
    body's type), so a client can send it as it stands."""
    types = documented_types()
    for name, body in _bodies(document).items():
        body_type = types[body["content"][JSON]["schema"]["$ref"]]
        decoder = msgspec.json.Decoder(body_type)
        for key, (_, value) in REQUEST_EXAMPLES[name].items():
            try:
                decoder.decode(msgspec.json.encode(value))
            except msgspec.ValidationError as exc:
                pytest.fail(f"{name} example {key!r}: {exc}")


def test_a_wrong_example_would_be_caught() -> None:
    """The decoder the check uses refuses what the handler refuses (a string amount)."""
    types = {t.__name__: t for t in documented_types().values()}
    decoder = msgspec.json.Decoder(types["TransferIn"])
    body = {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": "100",
            "currency": "USD"}  # fmt: skip
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(msgspec.json.encode(body))


def _example(operation: str, name: str, **changes: Any) -> dict[str, Any]:
    """The body of one example, with ``changes`` (ids known only when the test runs)."""
    return {**REQUEST_EXAMPLES[operation][name][1], **changes}


async def test_the_ledger_and_payment_examples_work_as_a_story(
    client: AsyncTestClient[Any],
) -> None:
    """Sent in order to a fresh ledger (with bank and shop made first, and holds to post
    or void where an example names one), every account, transfer, batch, hold, payment,
    refund and payout example is accepted: the examples are calls that work."""

    async def send(path: str, body: dict[str, Any], *, ok: int | tuple[int, ...]) -> Any:
        response = await client.post(path, json=body)
        assert response.status_code in ((ok,) if isinstance(ok, int) else ok), (
            path,
            body,
            response.text,
        )
        return response.json()

    for account in ("bank", "shop"):
        await send("/v1/accounts", {"id": account, "currency": "USD"}, ok=201)
    for name in REQUEST_EXAMPLES["POST /v1/accounts"]:
        await send("/v1/accounts", _example("POST /v1/accounts", name), ok=201)
    for name in REQUEST_EXAMPLES["POST /v1/transfers"]:
        await send("/v1/transfers", _example("POST /v1/transfers", name), ok=201)
    topup = {"debit_account_id": "bank", "credit_account_id": "alice", "currency": "USD"}
    await send("/v1/transfers", {"id": "topup-9", "amount": 100_000, **topup}, ok=201)

    hold = {"debit_account_id": "alice", "credit_account_id": "shop", "amount": 2500,
            "currency": "USD", "pending": True}  # fmt: skip
    for name in REQUEST_EXAMPLES["POST /v1/transfers/{transfer_id}/post"]:
        await send("/v1/transfers", {**hold, "id": f"post-{name}"}, ok=201)
        body = _example("POST /v1/transfers/{transfer_id}/post", name)
        posted = await send(f"/v1/transfers/post-{name}/post", body, ok=(200, 201))
        assert posted["status"] == "posted"
    await send("/v1/transfers/order-7/post", _example(
        "POST /v1/transfers/{transfer_id}/post", "partial"), ok=(200, 201))  # fmt: skip
    for name in REQUEST_EXAMPLES["POST /v1/transfers/{transfer_id}/void"]:
        await send("/v1/transfers", {**hold, "id": f"void-{name}"}, ok=201)
        body = _example("POST /v1/transfers/{transfer_id}/void", name)
        await send(f"/v1/transfers/void-{name}/void", body, ok=(200, 201))
    await send("/v1/transfers", {**hold, "id": "order-8"}, ok=201)
    for name in REQUEST_EXAMPLES["POST /v1/transfers/batch"]:
        batch = await send("/v1/transfers/batch", _example("POST /v1/transfers/batch", name),
                           ok=200)  # fmt: skip
        assert all("error" not in result for result in batch["results"]), batch

    payments = "POST /v1/payments"
    card = await send("/v1/payments", _example(payments, "card_manual"), ok=201)
    assert card["status"] == "requires_capture", card
    for name in REQUEST_EXAMPLES["POST /v1/payments/{payment_id}/capture"]:
        payment = await send("/v1/payments", _example(payments, "card_manual"), ok=201)
        body = _example("POST /v1/payments/{payment_id}/capture", name)
        captured = await send(f"/v1/payments/{payment['id']}/capture", body, ok=200)
        assert captured["status"] == "succeeded", captured
    body = _example("POST /v1/payments/{payment_id}/cancel", "cancel")
    canceled = await send(f"/v1/payments/{card['id']}/cancel", body, ok=200)
    assert canceled["status"] == "canceled", canceled
    wallet = await send("/v1/payments", _example(payments, "wallet"), ok=201)
    assert wallet["status"] == "succeeded", wallet
    for name in REQUEST_EXAMPLES["POST /v1/refunds"]:  # a card payment's, captured at once
        paid = await send("/v1/payments", _example(payments, "card_manual", capture="automatic"),
                          ok=201)  # fmt: skip
        body = _example("POST /v1/refunds", name, payment_id=paid["id"])
        await send("/v1/refunds", body, ok=201)
    await send("/v1/payouts", _example("POST /v1/payouts", "payout"), ok=201)
