"""Nested and oversized JSON against every POST route: never a 5xx, and a refused request
changes nothing.

The routes are read from the app (``api.routes.post_routes``), one test per route, so a
new POST route is fuzzed as soon as it exists (with the hostile bodies alone until it
gets a shape below). Each example sends a body that is hostile somewhere: arrays or
objects nested from a few levels to 100,000, strings up to 100,000 characters, integers
of up to 10,000 digits and floats out of range, objects and arrays of up to 10,000
members, long keys; as the whole body, as one of the fields of a well-formed request,
or inside its metadata or a batch item. After each, every table of every shard is
compared with before: a refusal by validation (422, 413, 415) left all of them
unchanged, any other refusal all but the stored answers of Idempotency-Keys (and the
writer's clock mark, ``shard_meta.last_timestamp``, which any transaction moves).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from api.routes import PROCESSOR, concrete, post_routes, signed_headers
from paycore.api import create_app
from paycore.cluster.topology import build_store
from paycore.config import Settings
from paycore.errors import ErrorCode
from paycore.ledger.refusals import KEPT_REFUSALS

pytestmark = pytest.mark.slow

_CODES = {c.value for c in ErrorCode}
# Refusals decided from the request alone, before any store is asked: nothing is kept.
_VALIDATION = {"invalid_request", "request_too_large", "unsupported_media_type",
               "batch_too_large"}  # fmt: skip
_MAX_BODY = 1024 * 1024

# A well-formed request for each route (ids exist in the app below, or not, as it falls).
_SHAPES: dict[str, dict[str, Any]] = {
    "/v1/accounts": {"id": "n1", "currency": "USD", "metadata": {"k": "v"}},
    "/v1/accounts/{account_id:str}/close": {},
    "/v1/transfers": {"id": "t1", "debit_account_id": "a1", "credit_account_id": "a2",
                      "amount": 5, "currency": "USD", "metadata": {"k": "v"}},
    "/v1/transfers/batch": {"transfers": [{"id": "t2", "debit_account_id": "a1",
                            "credit_account_id": "a2", "amount": 1, "currency": "USD",
                            "metadata": {"k": "v"}}]},
    "/v1/transfers/{transfer_id:str}/post": {"amount": 1, "metadata": {"k": "v"}},
    "/v1/transfers/{transfer_id:str}/void": {"metadata": {"k": "v"}},
    "/v1/payments": {"amount": 100, "currency": "USD", "merchant_account_id": "a2",
                     "capture": "manual", "source": {"card": {"number": "4242424242424242",
                     "exp_month": 12, "exp_year": 2040, "cvc": "123"}}},
    "/v1/payments/{payment_id:str}/capture": {"amount": 10},
    "/v1/payments/{payment_id:str}/cancel": {},
    "/v1/refunds": {"payment_id": "pay_1", "amount": 10},
    "/v1/payouts": {"amount": 10, "currency": "USD", "wallet_account_id": "a1",
                    "destination": "DE89370400440532013000"},
    "/v1/processor_events/{processor:str}": {"id": "evt_1", "type": "x.y", "reference": "r"},
    "/v1/api_keys": {"scopes": ["read"], "name": "n", "expires_in_seconds": 60},
    "/v1/api_keys/{key_id:str}/rotate": {"grace_seconds": 60},
    "/v1/webhook_endpoints": {"url": "http://127.0.0.1:9/x", "events": ["payment.*"],
                              "description": "d"},
    "/v1/webhook_endpoints/{endpoint_id:str}/rotate_secret": {"grace_seconds": 60},
    "/v1/webhook_endpoints/{endpoint_id:str}/test": {},
    "/v1/webhook_endpoints/{endpoint_id:str}/deliveries/{delivery_id:str}/redeliver": {},
    "/v1/fx/quotes": {"sell_currency": "USD", "buy_currency": "EUR", "sell_amount": 100},
    "/v1/fx/conversions": {"quote_id": "fxq_000000000000000000000000",
                           "debit_account_id": "a1", "credit_account_id": "a2"},
    "/v1/fx/conversions/{conversion_id:str}/capture": {"sell_amount": 10},
    "/v1/fx/conversions/{conversion_id:str}/void": {},
    "/v1/reconciliation/reports": {"processor": PROCESSOR.name, "report": "record,batch_id\n"},
    "/v1/reconciliation/exceptions/{exception_id:str}/resolve": {"note": "checked"},
}  # fmt: skip

_HOLE = "\x00hostile\x00"  # where the hostile JSON text goes, once encoded


def _nested(depth: int, kind: str) -> str:
    if kind == "arrays":
        return "[" * depth + "]" * depth
    if kind == "objects":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"a":[' * (depth // 2) + "{}" + "]}" * (depth // 2)  # mixed


_depths = st.sampled_from(
    [2, 5, 6, 31, 32, 33, 64, 65, 500, 960, 970, 975, 980, 1000, 2000, 5000, 100_000]
)
_deep = st.builds(_nested, _depths | st.integers(1, 1100),
                  st.sampled_from(["arrays", "objects", "mixed"]))  # fmt: skip
_huge_string = st.builds(
    lambda n, c: msgspec.json.encode(c * n).decode(),
    st.sampled_from([41, 65, 256, 501, 5_000, 100_000]),
    st.sampled_from(["x", "é", "\\", '"', "\x00", "\U0001f600", "["]),
)
_huge_number = st.sampled_from([
    "9" * 19, "-" + "9" * 19, "1" + "0" * 30, "9" * 4300, "9" * 4301, "9" * 10_000,
    "1e308", "1e309", "-1e400", "0.1e-400", "123456789012345678901234567890.5",
])  # fmt: skip
_many_members = st.builds(
    lambda n, kind, value: (
        "{" + ",".join(f'"k{i}":{value}' for i in range(n)) + "}"
        if kind == "object" else "[" + ",".join([value] * n) + "]"
    ),
    st.sampled_from([49, 50, 51, 1_000, 10_000]),
    st.sampled_from(["object", "array"]),
    st.sampled_from(["1", '"v"', "null", "[]", "{}"]),
)  # fmt: skip
_long_key = st.builds(
    lambda n: "{" + msgspec.json.encode("k" * n).decode() + ":1}",
    st.sampled_from([40, 41, 255, 10_000]),
)
# Depth is what overflows stacks: twice as likely as each other kind.
_hostile = st.one_of(_deep, _deep, _huge_string, _huge_number, _many_members, _long_key)


_PLACES = ["metadata", "item", "whole", "field"]


def _body(template: str, hostile: str, where: str, pick: int) -> bytes:
    """A request body for ``template`` with ``hostile`` (JSON text) ``where``: the whole
    body, one of its fields (the ``pick``-th, or a new one), its metadata, or a member
    of one of its nested objects (a batch item, a payment's source, its metadata)."""
    shape = _SHAPES.get(template, {})
    if where == "whole" or (not shape and where != "metadata"):
        return hostile.encode()
    body: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(shape))  # a deep copy
    if where == "field":
        names = [*sorted(body), "extra"]
        body[names[pick % len(names)]] = _HOLE
    elif where == "metadata":
        body["metadata"] = {"m": _HOLE} if pick % 2 else _HOLE
    else:
        nested = sorted(k for k, v in body.items() if isinstance(v, dict | list))
        if not nested:
            body["extra"] = {"inner": _HOLE}
        else:
            key = nested[pick % len(nested)]
            inner = body[key][0] if isinstance(body[key], list) else body[key]
            if isinstance(inner, dict):
                names = [*sorted(inner), "extra"]
                inner[names[pick // len(nested) % len(names)]] = _HOLE
            else:  # a list of scalars (scopes, event patterns): the hole is an item
                body[key][0] = _HOLE
    hole = msgspec.json.encode(_HOLE).decode()
    return msgspec.json.encode(body).decode().replace(hole, hostile).encode()


def _listing_app() -> Litestar:
    settings_ = Settings(data_dir="/nonexistent-paycore-fuzz", auth="open",
                         processors=(PROCESSOR,))  # fmt: skip
    return create_app(build_store(settings_), settings_, start_workers=False)


ROUTES = post_routes(_listing_app())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient[Any], Path]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz-bodies")
    app_settings = Settings(
        data_dir=str(data_dir),
        embedded_shards=2,
        auth="open",
        rate_limit_per_second=0,
        max_body_bytes=_MAX_BODY,
        processors=(PROCESSOR,),
    )
    app = create_app(build_store(app_settings), app_settings, start_workers=False)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        for account in ("a1", "a2"):
            assert client.post("/v1/accounts", json={"id": account, "currency": "USD"}).is_success
        funding = {"id": "fund", "debit_account_id": "a2", "credit_account_id": "a1",
                   "amount": 1_000_000, "currency": "USD"}  # fmt: skip
        assert client.post("/v1/transfers", json=funding).status_code == 201
        hold = {**funding, "id": "t-held", "debit_account_id": "a1", "credit_account_id": "a2",
                "amount": 100, "pending": True, "timeout_seconds": 3600}  # fmt: skip
        assert client.post("/v1/transfers", json=hold).status_code == 201
        yield client, data_dir


def _snapshot(data_dir: Path) -> dict[str, str]:
    """A digest of every table of every shard, by ``<shard>.<table>``."""
    digests: dict[str, str] = {}
    for path in sorted(data_dir.glob("*.sqlite3")):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]  # fmt: skip
            for table in tables:
                query = f'SELECT * FROM "{table}"'
                if table == "shard_meta":  # the writer's clock mark moves with any transaction
                    query += " WHERE key != 'last_timestamp'"
                rows = sorted(repr(row) for row in connection.execute(query))
                digests[f"{path.stem}.{table}"] = hashlib.sha256(
                    "\n".join(rows).encode()
                ).hexdigest()
        finally:
            connection.close()
    return digests


def test_every_post_route_is_fuzzed() -> None:
    """The list comes from the app, and every route in it has a well-formed shape here
    (a new route without one is still fuzzed, with hostile bodies alone)."""
    assert len(ROUTES) >= 12
    assert set(ROUTES) == set(_SHAPES)


@pytest.mark.parametrize("template", ROUTES)
@settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(
    hostile=_hostile,
    where=st.sampled_from(_PLACES),
    pick=st.integers(0, 99),
    key=st.none() | st.integers(0, 3),
)
# Bodies that overflowed a stack before (a random run may take a while to draw one). While
# it runs a test Hypothesis raises the recursion limit, so these go far deeper than the
# ~970 levels that were enough under a server (test_request_bodies.py pins that edge).
@example(hostile=_nested(100_000, "arrays"), where="metadata", pick=1, key=None)
@example(hostile=_nested(5000, "objects"), where="metadata", pick=1, key="k")
@example(hostile=_nested(100_000, "mixed"), where="item", pick=5, key=None)
@example(hostile=_nested(5000, "objects"), where="whole", pick=0, key=None)
@example(hostile=_nested(100_000, "arrays"), where="field", pick=99, key=None)
def test_nested_and_oversized_json_never_gets_a_5xx_and_a_refusal_changes_nothing(
    world: tuple[TestClient[Any], Path], template: str, *, hostile: str, where: str,
    pick: int, key: int | str | None,
) -> None:  # fmt: skip
    client, data_dir = world
    body = _body(template, hostile, where, pick)
    headers = {"content-type": "application/json", **signed_headers(template, body)}
    if key is not None:
        headers["idempotency-key"] = f"fuzz-{key}"
    before = _snapshot(data_dir)
    response = client.post(concrete(template), content=body, headers=headers)
    assert response.status_code < 500, (template, body[:300], response.text)
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == "application/problem+json", response.text
    problem = response.json()
    assert problem["code"] in _CODES
    assert problem["status"] == response.status_code
    after = _snapshot(data_dir)
    if problem["code"] not in _VALIDATION:  # a refusal by the store keeps a key's answer
        before = {k: v for k, v in before.items() if not k.endswith(".idempotency")}
        after = {k: v for k, v in after.items() if not k.endswith(".idempotency")}
    if problem["code"] in {c.value for c in KEPT_REFUSALS}:  # kept under the transfer id
        before = {k: v for k, v in before.items() if not k.endswith(".transfer_refusals")}
        after = {k: v for k, v in after.items() if not k.endswith(".transfer_refusals")}
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert changed == [], (template, problem, body[:300])
