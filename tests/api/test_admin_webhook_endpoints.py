"""``/v1/webhook_endpoints``: an admin key makes, lists, reads, deletes its tenant's
endpoints, rotates their secrets with a grace, queues a test event, lists deliveries
and redelivers one; the normal sender delivers them, signed with the derived secret,
which is shown once and stored nowhere."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.support import ManualClock
from api.test_auth import _files_holding
from backends import AnyStore
from paycore.api.auth import ApiKeys, Scope
from paycore.config import Settings
from paycore.payments.endpoint_secrets import KEY_FILE_NAME, endpoint_secret, signing_key
from paycore.payments.webhooks import SignatureError, verify_signature
from paycore.workers.webhooks import StoredEndpoints, WebhookWorker, webhook_client
from payments.test_webhooks_delivery import Receiver, fail_first


def _sender(
    store: AnyStore,
    settings: Settings,
    *,
    client: httpx.AsyncClient,
    clock: Callable[[], int] = time.time_ns,
) -> WebhookWorker:
    """The shard's webhook sender, as the supervisor makes it (endpoints read each
    pass); ``clock``: the store's, when a retry's delay must pass."""
    stored = StoredEndpoints(store, lambda: signing_key(settings), refresh_seconds=0)
    return WebhookWorker(
        store, store.name, (), stored=stored, schedule=(1.0, 1.0), client=client, clock=clock
    )


async def _make(client: AsyncTestClient[Any], url: str, **fields: Any) -> dict[str, Any]:
    made = await client.post("/v1/webhook_endpoints", json={"url": url, **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def test_an_endpoint_is_made_with_a_secret_shown_once(
    client: AsyncTestClient[Any], settings: Settings, backend: str, tmp_path: Path
) -> None:
    """POST answers the endpoint and its secret (derived from the signing key, id and
    version 1); reads and lists never show it; no file holds it."""
    made = await _make(client, "https://example.com/in", events=["payment.*"], description="d")
    assert made["secret"] == endpoint_secret(signing_key(settings), made["id"], 1)
    assert made["events"] == ["payment.*"]
    assert made["object"] == "webhook_endpoint"
    read = await client.get(f"/v1/webhook_endpoints/{made['id']}")
    listed = await client.get("/v1/webhook_endpoints")
    assert read.json() == {k: v for k, v in made.items() if k != "secret"}
    assert listed.json()["data"] == [read.json()]
    for text in (read.text, listed.text):
        assert made["secret"] not in text
    assert os.stat(tmp_path / KEY_FILE_NAME).st_mode & 0o077 == 0
    if backend == "sqlite":
        assert not _files_holding(tmp_path, made["secret"].encode())


async def test_a_replayed_create_has_no_secret(client: AsyncTestClient[Any]) -> None:
    """Under an Idempotency-Key a retry makes no second endpoint; its secret is null."""
    headers = {"Idempotency-Key": "e1"}
    body = {"url": "https://example.com/in"}
    first = await client.post("/v1/webhook_endpoints", json=body, headers=headers)
    again = await client.post("/v1/webhook_endpoints", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == {**first.json(), "secret": None}
    assert len((await client.get("/v1/webhook_endpoints")).json()["data"]) == 1


async def test_a_test_event_reaches_its_endpoint_alone_signed(
    client: AsyncTestClient[Any], store: AnyStore, settings: Settings
) -> None:
    """The test event goes, signed with the endpoint's secret, to that endpoint only
    (not to another one subscribed to every event), and shows in its deliveries."""
    async with Receiver(time.time_ns) as receiver, Receiver(time.time_ns) as other:
        made = await _make(client, receiver.url, events=["refund.*"])
        await _make(client, other.url)
        receiver.secret = made["secret"]
        queued = await client.post(f"/v1/webhook_endpoints/{made['id']}/test")
        assert queued.status_code == 202, queued.text
        event_id = queued.json()["event_id"]
        async with webhook_client() as http:
            await _sender(store, settings, client=http).run_once()
    assert [(r.event_id, r.signed) for r in receiver.got] == [(event_id, True)]
    assert receiver.got[0].event["type"] == "webhook_endpoint.test"
    assert receiver.got[0].event["data"]["object"]["id"] == made["id"]
    assert other.got == []
    page = (await client.get(f"/v1/webhook_endpoints/{made['id']}/deliveries")).json()
    (delivery,) = page["data"]
    assert delivery["id"] == event_id
    assert delivery["event_type"] == "webhook_endpoint.test"
    assert (delivery["status"], delivery["attempts"], delivery["last_response_code"]) == (
        "delivered",
        1,
        200,
    )


async def test_a_rotated_secret_signs_beside_the_old_one_during_the_grace(
    client: AsyncTestClient[Any], store: AnyStore, settings: Settings
) -> None:
    """During the grace each event carries a signature by the old and by the new
    secret, each verifying; rotated without grace, only the newest one signs."""
    made = await _make(client, "https://example.com/in")
    path = f"/v1/webhook_endpoints/{made['id']}"
    rotated = await client.post(f"{path}/rotate_secret", json={"grace_seconds": 600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new not in (None, made["secret"])
    assert rotated.json()["previous_secret_until"] is not None
    sent: list[tuple[str, bytes]] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append((request.headers["paycore-signature"], request.content))
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as http:
        sender = _sender(store, settings, client=http)
        await client.post(f"{path}/test")
        await sender.run_once()
        latest = (await client.post(f"{path}/rotate_secret")).json()["secret"]
        await client.post(f"{path}/test")
        await sender.run_once()
    (during, during_body), (after, after_body) = sent
    assert during.count("v1=") == 2
    for secret in (made["secret"], new):
        verify_signature(during, during_body, secret)
    assert after.count("v1=") == 1
    verify_signature(after, after_body, latest)
    with pytest.raises(SignatureError):
        verify_signature(after, after_body, new)


async def test_redelivery_sends_a_finished_event_again(
    client: AsyncTestClient[Any], store: AnyStore, settings: Settings, clock: ManualClock
) -> None:
    """A delivered event is sent again to that endpoint (same id) and its delivery
    counts one more attempt; one still being retried is 409; an unknown one 404."""
    async with Receiver(clock, answer=fail_first(1)) as receiver:
        made = await _make(client, receiver.url)
        receiver.secret = made["secret"]
        path = f"/v1/webhook_endpoints/{made['id']}"
        event_id = (await client.post(f"{path}/test")).json()["event_id"]
        async with webhook_client() as http:
            sender = _sender(store, settings, client=http, clock=clock)
            await sender.run_once()  # 500: pending, retried later
            busy = await client.post(f"{path}/deliveries/{event_id}/redeliver")
            assert busy.status_code == 409
            assert busy.json()["code"] == "webhook_delivery_in_progress"
            await _until_sent(sender, receiver, 2, clock)
            again = await client.post(f"{path}/deliveries/{event_id}/redeliver")
            assert again.status_code == 202, again.text
            await _until_sent(sender, receiver, 3, clock)
        missing = await client.post(f"{path}/deliveries/evt_nothing/redeliver")
        assert missing.json()["code"] == "webhook_delivery_not_found"
    assert [r.event_id for r in receiver.got] == [event_id] * 3
    assert [r.status for r in receiver.got] == [500, 200, 200]
    (delivery,) = (await client.get(f"{path}/deliveries")).json()["data"]
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)


async def _until_sent(
    sender: WebhookWorker, receiver: Receiver, count: int, clock: ManualClock
) -> None:
    """Passes of ``sender``, the clock moving past each retry delay, until ``receiver``
    got ``count`` requests."""
    for _ in range(10):
        await sender.run_once()
        if len(receiver.got) >= count:
            return
        clock.advance(2)
    raise AssertionError(f"{len(receiver.got)} deliveries, not {count}")


async def test_a_deleted_endpoint_gets_nothing_more(
    client: AsyncTestClient[Any], store: AnyStore, settings: Settings
) -> None:
    """DELETE answers the endpoint; it is then a missing one, and the sender skips it."""
    async with Receiver(time.time_ns) as receiver:
        made = await _make(client, receiver.url)
        path = f"/v1/webhook_endpoints/{made['id']}"
        await client.post(f"{path}/test")
        gone = await client.delete(path)
        assert gone.status_code == 200
        assert gone.json()["id"] == made["id"]
        async with webhook_client() as http:
            await _sender(store, settings, client=http).run_once()
        for method in ("GET", "DELETE"):
            response = await client.request(method, path)
            assert response.json()["code"] == "webhook_endpoint_not_found", method
    assert receiver.got == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "missing required field `url`"),
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "https://u:p@example.com/x"}, "credentials"),
        ({"url": "https://example.com", "events": ["Payment"]}, "$.events[0]"),
        ({"url": "https://example.com", "events": []}, "length >= 1"),
        ({"url": "https://example.com", "events": ["*", "*"]}, "must not repeat"),
        ({"url": "https://example.com", "secret": "mine"}, "unknown field `secret`"),
    ],
)
async def test_a_bad_endpoint_request_is_a_precise_422(
    client: AsyncTestClient[Any], body: dict[str, Any], words: str
) -> None:
    """Each bad body is 422 ``invalid_request`` saying what is wrong; nothing is made."""
    response = await client.post("/v1/webhook_endpoints", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert words in response.json()["detail"]
    assert (await client.get("/v1/webhook_endpoints")).json()["data"] == []


async def test_bad_rotation_and_page_parameters_are_422(client: AsyncTestClient[Any]) -> None:
    """A grace beyond 7 days, a foreign cursor, a page too large: 422 each."""
    made = await _make(client, "https://example.com/in")
    path = f"/v1/webhook_endpoints/{made['id']}"
    long = await client.post(f"{path}/rotate_secret", json={"grace_seconds": 8 * 86400})
    assert long.json()["code"] == "invalid_request"
    for query in (
        "/v1/webhook_endpoints?cursor=x",
        "/v1/webhook_endpoints?limit=100000",
        f"{path}/deliveries?cursor=x.y",
        f"{path}/deliveries?limit=0",
    ):
        response = await client.get(query)
        assert response.status_code == 422, query
        assert response.json()["code"] == "invalid_request"


async def test_only_admin_keys_manage_endpoints(open_client: Any, store: AnyStore) -> None:
    """Read and write keys get 403 ``forbidden_scope`` on every endpoint route."""
    async with open_client(auth="api_keys") as client:
        token = (await ApiKeys(store).create("t", frozenset({Scope.READ, Scope.WRITE}))).token
        headers = {"Authorization": f"Bearer {token}"}
        one = "/v1/webhook_endpoints/we_000000000000000000000000"
        for method, path in (
            ("GET", "/v1/webhook_endpoints"),
            ("POST", "/v1/webhook_endpoints"),
            ("GET", one),
            ("DELETE", one),
            ("POST", f"{one}/rotate_secret"),
            ("POST", f"{one}/test"),
            ("GET", f"{one}/deliveries"),
            ("POST", f"{one}/deliveries/evt_1/redeliver"),
        ):
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 403, (method, path)
            assert response.json()["code"] == "forbidden_scope"


def test_processes_starting_at_once_share_one_whole_signing_key(tmp_path: Path) -> None:
    """The key file is made by whoever comes first; every other process reads that same,
    complete key (never an empty file caught between its creation and its write)."""
    settings = Settings(data_dir=str(tmp_path))
    with ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(signing_key, [settings] * 16))
    assert len(set(keys)) == 1
    assert len(keys[0]) >= 32
    assert (tmp_path / KEY_FILE_NAME).read_bytes().strip() == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no draft left
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
