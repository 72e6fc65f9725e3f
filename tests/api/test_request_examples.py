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


@pytest.fixture
async def document(client: AsyncTestClient[Any]) -> dict[str, Any]:
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


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
