"""Rows stored before metadata was bounded still read: a transfer or account whose metadata
nests hundreds of levels (accepted by earlier versions) is listed and shown, with its
metadata exactly as stored, and never makes a read answer 500 (nor a retry of its id,
nor the hash chain's record of it change).

Such rows are written here through the store itself (the API refuses them now). The
store's writer runs on its own thread, whose fresh stack encoded them; every read runs
on the request's stack, where decoding them used to overflow.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.support import Api
from backends import AnyStore
from paycore.errors import PaycoreError
from paycore.ledger.model import AccountRequest, Transfer, TransferFlags, TransferRequest
from paycore.storage.base import CreateAccounts, CreateTransfers
from paycore.storage.chain import record_bytes
from paycore.storage.codec import (
    SAFE_DECODE_DEPTH,
    DeepMetadata,
    _decode_deep,
    decode_metadata,
    encode_json,
    encode_metadata,
    json_depth,
)

DEPTHS = [3, SAFE_DECODE_DEPTH, SAFE_DECODE_DEPTH + 1, 500]


def deep(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ... 1}}``: ``depth`` objects, built without recursion."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    result: dict[str, Any] = value
    return result


def deep_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def _store_rows(api: Api, store: AnyStore) -> list[int]:
    """Transfers t<depth> (a1 -> a2) and accounts acc<depth> with metadata of each depth
    in DEPTHS, and of the deepest the store's writer could encode (found by trying): the
    depths stored."""
    await api.account("a1")
    await api.account("a2")
    depths = list(DEPTHS)
    for depth in range(1000, 900, -1):
        try:
            await _store_transfer(store, f"t{depth}", deep(depth))
        except PaycoreError:  # too deep even for the writer's fresh stack
            continue
        depths.append(depth)
        break
    assert depths[-1] > 900
    for depth in depths[:-1]:
        await _store_transfer(store, f"t{depth}", deep(depth))
    for depth in depths:
        (account,) = await store.execute(
            CreateAccounts((AccountRequest(f"acc{depth}", "USD", metadata=deep(depth)),))
        )
        assert account.code is None, account
    return depths


async def _store_transfer(
    store: AnyStore, transfer_id: str, metadata: dict[str, Any], **fields: Any
) -> None:
    request = TransferRequest(
        id=transfer_id, debit_account_id="a1", credit_account_id="a2", amount=fields.pop(
            "amount", 1), currency="USD", metadata=metadata, **fields
    )  # fmt: skip
    (result,) = await store.execute(CreateTransfers((request,)))
    assert result.code is None, result


async def test_a_listing_with_deeply_nested_stored_metadata_is_served(
    api: Api, store: AnyStore
) -> None:
    """Both accounts' listings answer 200 with every row, each row's metadata byte for byte
    as stored; so do the single reads of each transfer and account."""
    depths = await _store_rows(api, store)
    for account in ("a1", "a2"):
        for order in ("asc", "desc"):
            response = await api.client.get(f"/v1/accounts/{account}/transfers?order={order}")
            assert response.status_code == 200, response.text[:300]
            for depth in depths:
                assert f'"metadata":{deep_text(depth)},' in response.text
        one_by_one = await api.client.get(f"/v1/accounts/{account}/transfers?limit=1")
        assert one_by_one.status_code == 200
    for depth in depths:
        transfer = await api.client.get(f"/v1/transfers/t{depth}")
        assert transfer.status_code == 200, transfer.text[:300]
        assert f'"metadata":{deep_text(depth)},' in transfer.text
        account_response = await api.client.get(f"/v1/accounts/acc{depth}")
        assert account_response.status_code == 200, account_response.text[:300]
        assert f'"metadata":{deep_text(depth)},' in account_response.text


async def test_a_stored_deep_transfer_still_answers_a_retry_of_its_id(
    api: Api, store: AnyStore
) -> None:
    """A request naming a stored deep transfer's id with other fields is the usual 409,
    and holds with such metadata still resolve."""
    deepest = (await _store_rows(api, store))[-1]
    again = await api.transfer(f"t{deepest}", "a1", "a2", 2)
    assert again.status_code == 409, again.text[:300]
    await _store_transfer(
        store, "h1", deep(deepest), amount=5, timeout_seconds=60,
        flags=TransferFlags(pending=True),
    )  # fmt: skip
    posted = await api.client.post("/v1/transfers/h1/post", json={"amount": 2})
    assert posted.status_code == 201, posted.text[:300]
    listing = await api.client.get("/v1/accounts/a1/transfers?order=desc&limit=2")
    assert listing.status_code == 200, listing.text[:300]


# -- the codec's depth and shallow decoding ------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab[]{}"\\:,\n é'), max_size=8),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k[]{}"\\'), max_size=4), inner, max_size=3
        )
    ),
    max_leaves=20,
)


def _reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    return 0


@given(_values)
def test_json_depth_is_exact_whatever_the_strings_hold(value: Any) -> None:
    """Brackets, quotes and backslashes inside strings never count; every encoder's
    spelling (msgspec's compact, json's spaced and escaped) gives the same depth."""
    depth = _reference_depth(value)
    for text in (msgspec.json.encode(value), json.dumps(value).encode()):
        assert json_depth(text) == depth, text
        assert json_depth(text, enough=depth) <= depth


@given(_values)
def test_the_loops_decode_and_encode_exactly_as_msgspec(value: Any) -> None:
    """The loop that decodes deep rows gives the values msgspec gives, and the loop that
    encodes them writes msgspec's bytes."""
    metadata = {"m": value, "n": [value], "false": "s"}
    stored = msgspec.json.encode(metadata)
    decoded = _decode_deep(stored)
    assert type(decoded) is DeepMetadata
    assert decoded == metadata
    assert encode_json(decoded) == stored
    assert encode_json(value) == msgspec.json.encode(value)


def test_the_hash_chain_sees_a_deep_row_as_it_was_written() -> None:
    """The chain hashes metadata with keys sorted at every depth; a deep row read back
    must give the record it was written with (or the audit would cry tampering)."""
    inner: dict[str, Any] = {"z": 1, "a": [2, {"y": 3, "b": 4}]}
    metadata = inner
    for n in range(SAFE_DECODE_DEPTH + 40):
        metadata = {"k": metadata, "c": n} if n % 7 else {"k": metadata}
    written = Transfer(
        id="t1", debit_account_id="a", credit_account_id="b", amount=1, currency="USD",
        code=0, flags=TransferFlags(), pending_id=None, timeout_seconds=0,
        metadata=metadata, timestamp=1,
    )  # fmt: skip
    read = msgspec.structs.replace(written, metadata=decode_metadata(encode_metadata(metadata)))
    assert type(read.metadata) is DeepMetadata
    assert record_bytes(7, read) == record_bytes(7, written)
    assert encode_metadata(read.metadata) == encode_metadata(metadata)


@pytest.mark.parametrize("depth", [1, SAFE_DECODE_DEPTH, SAFE_DECODE_DEPTH + 1, 100_000])
def test_decode_metadata_never_recurses(depth: int) -> None:
    text = deep_text(depth)
    decoded = decode_metadata(text)
    assert decoded is not None
    assert (type(decoded) is DeepMetadata) == (depth > SAFE_DECODE_DEPTH)
    assert encode_json(decoded) == text.encode()
    assert encode_metadata(decoded) == text
