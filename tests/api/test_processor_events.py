"""``POST /v1/processor_events/{processor}``: a processor's signed notifications are kept once
per (processor, event id); a duplicate is a 200, a bad signature a 401 ``invalid_signature``,
a bad body a 422, and nothing a client sends makes it answer 500. Both backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.testing import TestClient

from api.support import asgi_transport, assert_problem
from backends import AnyStore, LedgerDatabase, StoreFactory
from paycore.api import create_app
from paycore.api.auth import AuthMiddleware
from paycore.api.problems import EXCEPTION_HANDLERS
from paycore.api.routes.processor_events import processor_event_routes
from paycore.cluster.router import ShardedStore
from paycore.cluster.topology import build_store
from paycore.config import ProcessorConfig, Settings
from paycore.errors import ErrorCode
from paycore.payments.webhooks import SIGNATURE_HEADER, signature_header
from paycore.storage.payments import PaymentReads, ProcessorEventRow

SECRET = "whsec_acq_0123456789abcdef"
PATH = "/v1/processor_events/acq"


def processors() -> tuple[ProcessorConfig, ...]:
    return (
        ProcessorConfig("acq", "http://127.0.0.1:9", webhook_secret=SECRET),
        ProcessorConfig("acq-b", "http://127.0.0.1:9", webhook_secret=SECRET + "-b"),
        ProcessorConfig("quiet", "http://127.0.0.1:9"),  # no secret: posts nothing
    )


def signed(body: bytes, secret: str = SECRET, *, at: float | None = None) -> dict[str, str]:
    """A processor's headers: its signature, and the JSON media type every body needs."""
    now = int(time.time() if at is None else at)
    return {
        SIGNATURE_HEADER: signature_header([secret], body, now=now),
        "content-type": "application/json",
    }


def notification(event_id: str = "evt_1", **fields: Any) -> bytes:
    body = {"id": event_id, "type": "authorization.captured", "reference": "pay_x.a1", **fields}
    return msgspec.json.encode(body)


def app_over(store: Any, tmp_path: Path) -> Litestar:
    settings = Settings(data_dir=str(tmp_path), processors=processors(), auth="open")
    return Litestar(
        route_handlers=processor_event_routes(store, settings),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(AuthMiddleware, keys=None)],
        logging_config=None,
    )


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[AnyStore]:
    s = make_store()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def client(store: AnyStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client in the store's event loop: requests run concurrently, for real."""
    transport = asgi_transport(app_over(store, tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def post(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str], path: str = PATH
) -> httpx.Response:
    return await client.post(path, content=body, headers=headers)


def kept(database: LedgerDatabase) -> list[tuple[Any, ...]]:
    return database.query("SELECT processor, id, type, reference, body FROM processor_events")


# -- signatures --------------------------------------------------------------------------------


async def test_a_signed_notification_is_kept_and_a_duplicate_is_a_200(
    client: httpx.AsyncClient, store: AnyStore, database: LedgerDatabase
) -> None:
    """The first delivery is kept as received; the same id again (even with another body)
    is answered 200 duplicate and changes nothing."""
    body = notification(amount=100)
    first = await post(client, body, signed(body))
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False}
    again = await post(client, body, signed(body))
    assert (again.status_code, again.json()) == (200, {"received": True, "duplicate": True})
    other = notification(amount=999)
    changed = await post(client, other, signed(other))
    assert changed.json() == {"received": True, "duplicate": True}
    assert kept(database) == [("acq", "evt_1", "authorization.captured", "pay_x.a1", body.decode())]
    reads = store.payments
    assert isinstance(reads, PaymentReads)
    row = await reads.processor_event("acq", "evt_1")
    assert isinstance(row, ProcessorEventRow)
    assert row.received_at > 0


async def test_the_same_id_from_two_processors_is_two_events(
    client: httpx.AsyncClient, database: LedgerDatabase
) -> None:
    """Deduplication is per processor: their ids are their own."""
    body = notification("evt_same")
    a = await post(client, body, signed(body))
    b = await post(client, body, signed(body, SECRET + "-b"), "/v1/processor_events/acq-b")
    assert [a.json()["duplicate"], b.json()["duplicate"]] == [False, False]
    assert sorted(r[0] for r in kept(database)) == ["acq", "acq-b"]


@pytest.mark.parametrize(
    ("make_headers", "why"),
    [
        (lambda: {}, "missing"),
        (lambda: {SIGNATURE_HEADER: ""}, "missing"),
        (lambda: {SIGNATURE_HEADER: "nonsense"}, "malformed"),
        (lambda: {SIGNATURE_HEADER: "t=1,v2=ab"}, "lacks"),
        (lambda: signed(notification(), "whsec_someone_else_0000"), "does not match"),
        (lambda: signed(notification(), SECRET + "-b"), "does not match"),  # another's
        # Signed when the test runs, not when it is collected (a long run would age them).
        (lambda: signed(notification(), at=time.time() - 310), "tolerance"),  # a replay
        (lambda: signed(notification(), at=time.time() + 310), "tolerance"),
        (lambda: signed(notification("evt_other")), "does not match"),  # another body
    ],
    ids=["none", "empty", "malformed", "no-v1", "wrong", "other", "stale", "future", "body"],
)
async def test_a_bad_signature_is_a_401_and_keeps_nothing(
    client: httpx.AsyncClient,
    database: LedgerDatabase,
    make_headers: Callable[[], dict[str, str]],
    why: str,
) -> None:
    """Missing, malformed, wrong, stale or for another body: 401 ``invalid_signature``
    saying what is wrong, and nothing is kept."""
    response = await post(client, notification(), make_headers())
    problem = assert_problem(response, ErrorCode.INVALID_SIGNATURE)
    assert why in problem["detail"]
    assert kept(database) == []


@pytest.mark.parametrize("processor", ["quiet", "nobody", "x" * 300])
async def test_a_processor_without_a_secret_cannot_post(
    client: httpx.AsyncClient, database: LedgerDatabase, processor: str
) -> None:
    """A processor unknown or without a webhook secret: 404 ``not_found`` (not told apart),
    whatever the signature."""
    body = notification()
    response = await post(client, body, signed(body), f"/v1/processor_events/{processor}")
    assert_problem(response, ErrorCode.NOT_FOUND)
    assert kept(database) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"evt_1"',
        b'{"type": "x"}',  # no id
        b'{"id": "evt_1"}',  # no type
        b'{"id": "evt 1", "type": "x"}',  # a space in the id
        b'{"id": "", "type": "x"}',
        b'{"id": 7, "type": "x"}',
        b'{"id": "evt_1", "type": "x", "reference": 12}',
        b'{"id": "evt_1", "type": "a b"}',
        b'{"id": "evt_\\u0000", "type": "x"}',
        b'{"id": "' + b"e" * 256 + b'", "type": "x"}',
        b'{"id": "evt_1", "type": "x"',  # truncated
        b'\xff{"id": "evt_1", "type": "x"}',  # not UTF-8
    ],
)
async def test_a_signed_body_that_is_not_an_event_is_a_422(
    client: httpx.AsyncClient, database: LedgerDatabase, body: bytes
) -> None:
    """Correctly signed but not ``{id, type, reference?}`` with string ids: 422, nothing kept."""
    response = await post(client, body, signed(body))
    assert_problem(response, ErrorCode.INVALID_REQUEST)
    assert kept(database) == []


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_duplicates_keep_exactly_one(
    client: httpx.AsyncClient, make_store: StoreFactory, database: LedgerDatabase, tmp_path: Path
) -> None:
    """Twenty copies at once on one node, and twenty more on a second node over the same
    database: exactly one is new, every other answer is a 200 duplicate, one row is kept."""
    body = notification("evt_race")
    other = make_store(name="shard-0")
    await other.start()
    try:
        transport = asgi_transport(app_over(other, tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://node-2") as second:
            answers = await asyncio.gather(
                *(post(c, body, signed(body)) for _ in range(20) for c in (client, second))
            )
    finally:
        await other.stop()
    assert [a.status_code for a in answers] == [200] * 40
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 39
    assert len(kept(database)) == 1


async def test_on_several_shards_a_notification_has_one_home(tmp_path: Path) -> None:
    """Over a sharded store, each (processor, id) is kept on the shard its key hashes to,
    so a duplicate always meets the first copy."""
    store = build_store(Settings(data_dir=str(tmp_path / "data"), embedded_shards=3))
    assert isinstance(store, ShardedStore)
    await store.start()
    try:
        transport = asgi_transport(app_over(store, tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            bodies = [notification(f"evt_{i}") for i in range(12)]
            first = [await post(client, b, signed(b)) for b in bodies]
            again = await asyncio.gather(*(post(client, b, signed(b)) for b in bodies))
        homes = set()
        for i in range(12):
            found = []
            for name, shard in store.shards.items():
                reads = shard.payments
                if await reads.processor_event("acq", f"evt_{i}") is not None:
                    found.append(name)
            assert len(found) == 1
            homes.update(found)
    finally:
        await store.stop()
    assert [r.json()["duplicate"] for r in first] == [False] * 12
    assert [r.json()["duplicate"] for r in again] == [True] * 12
    assert len(homes) > 1  # spread over the shards


# -- fuzzing, through the whole app ---------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_ids = st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True)
_events = st.fixed_dictionaries(
    {"id": _ids | _json, "type": st.from_regex(r"[a-z_.]{1,20}", fullmatch=True) | _json},
    optional={"reference": _ids | _json, "amount": _json, "data": _json},
)
_bodies = (
    st.binary(max_size=200) | _json.map(msgspec.json.encode) | _events.map(msgspec.json.encode)
)


def test_fuzzed_bodies_and_headers_never_get_a_500(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """Through the full app: any signed body is a 200 (an event) or a 422, any body with a
    made-up signature a 401; never a 500."""
    settings = Settings(data_dir=str(tmp_path), processors=processors(), auth="open")
    app = create_app(make_store(), settings, start_workers=False)
    statuses: set[int] = set()
    with TestClient(app=app) as client:

        @hypothesis_settings(max_examples=150)
        @given(body=_bodies, header=st.text(st.characters(min_codepoint=32, max_codepoint=126)))
        def check(body: bytes, header: str) -> None:
            response = client.post(PATH, content=body, headers=signed(body))
            assert response.status_code in (200, 422), response.text
            statuses.add(response.status_code)
            if response.status_code == 200:
                assert set(response.json()) == {"received", "duplicate"}
            forged = client.post(PATH, content=body, headers={SIGNATURE_HEADER: header})
            assert forged.status_code == 401, forged.text

        check()
    assert statuses == {200, 422}  # both kinds of body were tried


def test_a_short_processor_secret_is_refused() -> None:
    """A processor's webhook secret needs 16 characters at least."""
    table = {"name": "acq", "url": "http://x", "webhook_secret": "short"}
    with pytest.raises(msgspec.ValidationError, match="16 characters"):
        msgspec.convert({"processors": [table]}, Settings)
