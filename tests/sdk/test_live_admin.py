"""The admin API through the SDK (``client.api_keys``, ``client.webhook_endpoints``),
sync and async, against a real ``paycore serve`` and a real receiver of its events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import pytest

from paycore_client import (
    AsyncPaycore,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    Paycore,
    PermissionDeniedError,
    webhooks,
)
from paycore_client.models import WebhookDelivery
from sdk.support import LiveServer

T = TypeVar("T")


class _Receiver(ThreadingHTTPServer):
    """Takes every POST with 200 and keeps (headers, body) of each."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.headers.get(webhooks.SIGNATURE_HEADER, ""), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def admin(live_server: LiveServer) -> Iterator[Paycore]:
    with Paycore(live_server.admin_key, base_url=live_server.base_url) as client:
        yield client


def _eventually(check: Callable[[], T | None], seconds: float = 30) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.2)


def test_api_keys_are_made_listed_rotated_and_revoked(
    admin: Paycore, live_server: LiveServer, uid: str
) -> None:
    """A key made over the API works at once; a rotation gives a new token while the old
    one keeps its grace; a revoked key is refused; the list shows each with its status."""
    made = admin.api_keys.create(scopes=["read"], name=f"{uid} reporting")
    assert made.token is not None
    assert made.token.startswith("pk_live_")
    assert (made.scopes, made.status, made.tenant) == (["read"], "active", "acme")
    assert admin.api_keys.retrieve(made.id) == admin.api_keys.list(limit=1000).data[-1]
    with Paycore(made.token, base_url=live_server.base_url) as reader:
        reader.accounts.list(limit=1)  # may read
        with pytest.raises(PermissionDeniedError):
            reader.accounts.create(currency="USD")

    rotated = admin.api_keys.rotate(made.id, grace_seconds=60)
    assert rotated.token is not None
    assert rotated.token != made.token
    assert rotated.replaces.id == made.id
    assert rotated.replaces.replaced_by == rotated.id
    assert rotated.name == made.name

    revoked = admin.api_keys.revoke(rotated.id)
    assert revoked.status == "revoked"
    with Paycore(rotated.token, base_url=live_server.base_url, max_network_retries=0) as gone:
        with pytest.raises(AuthenticationError) as refused:
            gone.accounts.list(limit=1)
        assert refused.value.code == "unauthorized"
    statuses = {key.id: key.status for key in admin.api_keys.list().auto_paging_iter()}
    assert statuses[rotated.id] == "revoked"
    with pytest.raises(NotFoundError) as missing:
        admin.api_keys.retrieve("0123456789abcdef")
    assert missing.value.code == "api_key_not_found"


def test_an_api_key_without_admin_scope_cannot_manage_keys(live_server: LiveServer) -> None:
    """The admin services need an admin key: a read-write key gets 403."""
    with Paycore(live_server.write_key, base_url=live_server.base_url) as client:
        with pytest.raises(PermissionDeniedError) as refused:
            client.api_keys.list()
        assert refused.value.code == "forbidden_scope"


def test_a_webhook_endpoint_gets_a_signed_test_event_and_it_is_redelivered(
    admin: Paycore, receiver: _Receiver, uid: str
) -> None:
    """An endpoint's test event reaches the receiver signed with the endpoint's secret,
    shows as delivered, and is sent again on request; a new secret signs after rotation."""
    endpoint = admin.webhook_endpoints.create(url=receiver.url, description=f"{uid} shop")
    assert endpoint.secret is not None
    assert endpoint.events == ["*"]
    assert admin.webhook_endpoints.retrieve(endpoint.id).url == receiver.url
    listed = [e.id for e in admin.webhook_endpoints.list().auto_paging_iter()]
    assert endpoint.id in listed

    queued = admin.webhook_endpoints.send_test_event(endpoint.id)
    assert (queued.endpoint_id, queued.status) == (endpoint.id, "queued")

    def delivered() -> WebhookDelivery | None:
        page = admin.webhook_endpoints.list_deliveries(endpoint.id)
        return next((d for d in page.data if d.id == queued.event_id and
                     d.status == "delivered"), None)  # fmt: skip

    delivery = _eventually(delivered)
    assert delivery.last_response_code == 200
    assert delivery.event_type == "webhook_endpoint.test"
    header, body = receiver.received[0]
    event = webhooks.construct_event(body, header, [endpoint.secret])
    assert event.id == queued.event_id

    again = admin.webhook_endpoints.redeliver(endpoint.id, queued.event_id)
    assert again.event_id == queued.event_id
    _eventually(lambda: True if len(receiver.received) >= 2 else None)

    rotated = admin.webhook_endpoints.rotate_secret(endpoint.id, grace_seconds=60)
    assert rotated.secret is not None
    assert rotated.secret != endpoint.secret
    assert rotated.previous_secret_until is not None

    gone = admin.webhook_endpoints.delete(endpoint.id)
    assert gone.id == endpoint.id
    with pytest.raises(NotFoundError) as missing:
        admin.webhook_endpoints.retrieve(endpoint.id)
    assert missing.value.code == "webhook_endpoint_not_found"


def test_redelivering_an_unknown_event_is_not_found(admin: Paycore, receiver: _Receiver) -> None:
    """A delivery id the endpoint never had: NotFoundError with its code."""
    endpoint = admin.webhook_endpoints.create(url=receiver.url, events=["payment.*"])
    with pytest.raises(NotFoundError) as missing:
        admin.webhook_endpoints.redeliver(endpoint.id, "evt_nope")
    assert missing.value.code == "webhook_delivery_not_found"
    admin.webhook_endpoints.delete(endpoint.id)


def test_the_last_admin_key_is_not_revoked(live_server: LiveServer) -> None:
    """A ConflictError names ``last_admin_key`` when the tenant would lose its last admin
    key (tenant "solo" has one admin key only, made over the API by nobody else)."""
    with Paycore(live_server.admin_key, base_url=live_server.base_url) as admin:
        own = next(k for k in admin.api_keys.list().auto_paging_iter() if "admin" in k.scopes)
        others = [
            k
            for k in admin.api_keys.list().auto_paging_iter()
            if "admin" in k.scopes and k.status == "active" and k.id != own.id
        ]
        if others:
            pytest.skip("another test made an admin key of this tenant")
        with pytest.raises(ConflictError) as refused:
            admin.api_keys.revoke(own.id)
        assert refused.value.code == "last_admin_key"


async def test_the_async_admin_services(live_server: LiveServer, receiver: _Receiver) -> None:
    """The same services awaited: a key made, listed and revoked; an endpoint made, its
    test event queued, its deliveries listed, then deleted."""
    async with AsyncPaycore(live_server.admin_key, base_url=live_server.base_url) as admin:
        made = await admin.api_keys.create(scopes=["read", "write"])
        assert made.token is not None
        page = await admin.api_keys.list(limit=1000)
        assert made.id in {k.id for k in page.data}
        rotated = await admin.api_keys.rotate(made.id)
        assert (await admin.api_keys.retrieve(made.id)).replaced_by == rotated.id
        assert (await admin.api_keys.revoke(rotated.id)).status == "revoked"

        endpoint = await admin.webhook_endpoints.create(url=receiver.url)
        queued = await admin.webhook_endpoints.send_test_event(endpoint.id)
        assert queued.endpoint_id == endpoint.id
        deliveries = await admin.webhook_endpoints.list_deliveries(endpoint.id, limit=10)
        assert all(d.id == queued.event_id for d in deliveries.data)
        endpoints = await admin.webhook_endpoints.list()
        assert endpoint.id in [e.id async for e in endpoints.auto_paging_iter()]
        assert (await admin.webhook_endpoints.rotate_secret(endpoint.id)).secret is not None
        assert (await admin.webhook_endpoints.delete(endpoint.id)).id == endpoint.id
