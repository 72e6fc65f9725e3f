"""Fuzzed requests to every POST route never get a 500: random and hostile headers
(Content-Type, Content-Length that lies, Idempotency-Key garbage, huge headers,
Authorization and signature junk) and bodies (random JSON, wrong types, deep nesting,
huge numbers, floats, NaN, non-UTF-8 bytes) always get an answer below 500 (or a 503
that says so), and every error is problem+json with a stable code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from paycore.api import create_app
from paycore.cluster.topology import build_store
from paycore.config import ProcessorConfig, Settings
from paycore.errors import ErrorCode

pytestmark = pytest.mark.slow

_SECRET = "whsec_fuzz_0123456789abcdef"
_CODES = {c.value for c in ErrorCode}

# A request shaped like each route wants, for mutation (ids exist or not, as it falls).
_SHAPES: dict[str, dict[str, Any]] = {
    "/v1/accounts": {"id": "a1", "currency": "USD", "flags": {"no_overdraft": True}},
    "/v1/accounts/{id}/close": {"transfer_balance_to": "a2"},
    "/v1/transfers": {"id": "t1", "debit_account_id": "a1", "credit_account_id": "a2",
                      "amount": 5, "currency": "USD", "pending": True, "timeout_seconds": 5},
    "/v1/transfers/batch": {"transfers": [{"id": "t2", "debit_account_id": "a1",
                            "credit_account_id": "a2", "amount": 1, "currency": "USD",
                            "linked": True}]},
    "/v1/transfers/{id}/post": {"amount": 1},
    "/v1/transfers/{id}/void": {},
    "/v1/payments": {"amount": 100, "currency": "USD", "merchant_account_id": "a2",
                     "capture": "manual", "source": {"card": {"number": "4242424242424242",
                     "exp_month": 12, "exp_year": 2040, "cvc": "123"}}},
    "/v1/payments/{id}/capture": {"amount": 10},
    "/v1/payments/{id}/cancel": {},
    "/v1/refunds": {"payment_id": "pay_1", "amount": 10},
    "/v1/payouts": {"amount": 10, "currency": "USD", "wallet_account_id": "a1"},
    "/v1/processor_events/{id}": {"id": "evt_1", "type": "x.y", "reference": "r"},
}  # fmt: skip

_ids = st.sampled_from(["a1", "a2", "t1", "pay_1", "acq", "x" * 65, "%00", "a%2Fb", "ü", "..", "-"])
_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=64,
)
_huge = st.integers(min_value=100, max_value=200).map(lambda n: "k" * (n * 50))
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(shape: Any, data: st.DataObject) -> Any:
    """``shape`` with some fields replaced by random values, dropped or added."""
    if isinstance(shape, dict):
        out = {}
        for key, value in shape.items():
            action = data.draw(st.sampled_from(["keep", "keep", "mutate", "random", "drop"]))
            if action == "keep":
                out[key] = value
            elif action == "mutate":
                out[key] = _mutate(value, data)
            elif action == "random":
                out[key] = data.draw(_json_values)
        if data.draw(st.booleans()):
            out[data.draw(st.text(max_size=8))] = data.draw(_json_values)
        return out
    if isinstance(shape, list):
        return [_mutate(item, data) for item in shape]
    return data.draw(st.one_of(st.just(shape), _json_values))


_raw_bodies = st.one_of(
    st.binary(max_size=64),  # anything, non-UTF-8 included
    st.sampled_from([
        b"", b"null", b"[]", b"{", b'{"a": NaN}', b'{"amount": Infinity}', b"NaN",
        b'{"amount": 1e999}', b'{"amount": -0.0}', b'{"amount": ' + b"9" * 5000 + b"}",
        b'{"id": "\xff\xfe"}', b'{"id": "\\ud800"}', b"\xef\xbb\xbf{}",
        b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"currency": "USD", "currency": "EUR"}',
    ]),
)  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app_settings = Settings(
        data_dir=str(data_dir),
        embedded_shards=2,
        auth="open",  # the handlers are fuzzed here; tests/api/test_auth.py fuzzes the keys
        rate_limit_per_second=0,
        max_body_bytes=64 * 1024,
        processors=(ProcessorConfig("acq", "http://127.0.0.1:9", webhook_secret=_SECRET),),
    )
    app = create_app(build_store(app_settings), app_settings, start_workers=False)
    with TestClient(app=app, raise_server_exceptions=False) as c:
        for n in (1, 2):
            c.post("/v1/accounts", json={"id": f"a{n}", "currency": "USD"})
        yield c


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_posts_never_answer_500(client: TestClient[Any], data: st.DataObject) -> None:
    """Whatever the headers and body, a POST is answered below 500 (503 only with its
    own code), and every error is problem+json naming a known code."""
    template = data.draw(st.sampled_from(sorted(_SHAPES)))
    path = template.replace("{id}", data.draw(_ids))
    if data.draw(st.booleans()):
        body = json.dumps(_mutate(_SHAPES[template], data)).encode()
    else:
        body = data.draw(_raw_bodies)
    headers: dict[str, str] = {}
    headers["Content-Type"] = data.draw(
        st.sampled_from([
            "application/json", "application/json; charset=latin-1", "text/plain",
            "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
            "application/problem+json", "*/*",
        ]) | _header_text
    )  # fmt: skip
    if data.draw(st.booleans()):
        headers["Idempotency-Key"] = data.draw(_header_text | _huge)
    if data.draw(st.booleans()):
        headers["Content-Length"] = data.draw(
            st.sampled_from(["0", "-1", "abc", "1" * 30, str(len(body) + 7), str(len(body))])
        )
    if data.draw(st.booleans()):
        headers["Authorization"] = data.draw(
            st.sampled_from(["Bearer ", "Bearer pk_live__", "Basic", "Bearer pk_live_k_s"])
            | _header_text
        )
    if data.draw(st.booleans()):
        headers["Paycore-Signature"] = data.draw(
            st.sampled_from(["t=1,v1=00", "t=99999999999999,v1=a", "v1=", "=,=", ",,"])
            | _header_text
        )
    if data.draw(st.booleans()):
        headers["X-Huge"] = data.draw(_huge)
    raw_headers = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    response = client.post(path, content=body, headers=raw_headers)
    assert response.status_code != 500, (path, headers, body[:200], response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["code"] in _CODES
        assert problem["status"] == response.status_code
    if response.status_code >= 500:
        assert response.status_code == 503, response.text
