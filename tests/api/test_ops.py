"""Ops endpoints (/healthz, /readyz, /metrics, /docs), the app lifecycle and the problem shape."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from api.support import Api, assert_problem, resolve_refs
from backends import AnyStore
from paycore.errors import ErrorCode, UnavailableError
from paycore.payments.processors.base import AuthorizeRequest, CardDetails
from paycore.payments.resilient import ResilientConnector
from paycore.payments.testing import ScriptedConnector


async def test_healthz_answers_while_the_process_is_up(client: AsyncTestClient[Any]) -> None:
    """/healthz is 200 without touching the store."""
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_says_ready_and_warns_loudly_when_auth_is_open(
    client: AsyncTestClient[Any],
) -> None:
    """/readyz is 200 when the store answers, and says auth is open with a warning."""
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["auth"] == "open"
    assert "without an API key" in body["warning"]


async def test_readyz_is_503_when_the_store_is_down(
    client: AsyncTestClient[Any], store: AnyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz is 503 with Retry-After when the store cannot serve."""

    async def down() -> None:
        raise UnavailableError("shard shard-0: unable to open database file", retry_after=5)

    monkeypatch.setattr(store, "ping", down)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["status"] == "unavailable"
    assert "unable to open" in response.json()["detail"]


async def test_readyz_without_open_auth_has_no_warning(open_client: Any) -> None:
    """When auth is not open, /readyz reports it and carries no warning."""
    async with open_client(auth="api_keys") as client:
        body = (await client.get("/readyz")).json()
    assert body["auth"] == "api_keys"
    assert "warning" not in body


async def test_open_auth_is_logged_loudly_at_startup(
    open_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Starting with auth = "open" logs a WARNING that no API keys are checked."""
    with caplog.at_level(logging.WARNING, logger="paycore.api.app"):
        async with open_client():
            pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without an API key" in r.getMessage() for r in warnings)


async def test_lifespan_starts_and_stops_the_store(open_client: Any, store: AnyStore) -> None:
    """The app starts the store on startup and stops it on shutdown."""
    async with open_client() as client:
        assert (await client.get("/readyz")).status_code == 200
        assert store.writer_stats is not None
    with pytest.raises(UnavailableError):
        await store.ping()


async def test_metrics_counts_requests_and_store_work(api: Api) -> None:
    """/metrics exposes request counts by route template and status, latency, writer stats."""
    await api.account("a")
    await api.account("b")
    await api.ok_transfer("t1", "a", "b", 5)
    await api.client.get("/v1/transfers/ghost")
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'paycore_http_requests_total{method="POST",route="/v1/accounts",status="201"} 2.0' in text
    )
    assert (
        'paycore_http_requests_total{method="GET",route="/v1/transfers/{transfer_id}",'
        'status="404"} 1.0' in text
    )
    assert 'paycore_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    assert "paycore_store_transactions_total 3.0" in text
    assert "paycore_store_commands_total 3.0" in text
    assert "paycore_idempotency_keys_in_flight 0.0" in text


async def test_docs_serve_the_openapi_ui_and_schema(client: AsyncTestClient[Any]) -> None:
    """/docs serves the UI and the OpenAPI document with request and response schemas."""
    ui = await client.get("/docs")
    assert ui.status_code == 200
    assert "<html" in ui.text.lower()
    schema = (await client.get("/docs/openapi.json")).json()
    operation = resolve_refs(schema["paths"]["/v1/transfers"]["post"], schema)
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["properties"]["amount"]["maximum"] == 2**63 - 1
    assert body_schema["additionalProperties"] is False
    assert "201" in operation["responses"]
    assert "application/problem+json" in operation["responses"]["default"]["content"]
    assert "/v1/accounts/{account_id}/transfers" in schema["paths"]
    assert "/metrics" not in schema["paths"]


async def test_unknown_route_and_wrong_method_are_problems(client: AsyncTestClient[Any]) -> None:
    """No such path is 404 not_found; a known path with a wrong method is 405 with Allow."""
    assert_problem(await client.get("/v2/accounts"), ErrorCode.NOT_FOUND)
    response = await client.put("/v1/transfers", json={})
    assert_problem(response, ErrorCode.METHOD_NOT_ALLOWED)
    assert "POST" in response.headers["allow"]


async def test_unexpected_exception_is_a_logged_500_problem(
    client: AsyncTestClient[Any],
    store: AnyStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug surfaces as 500 internal_error, logged with its traceback, cause not disclosed."""

    async def broken(ids: list[str]) -> Any:
        raise KeyError("column 7")

    monkeypatch.setattr(store, "get_accounts", broken)
    response = await client.get("/v1/accounts/a")
    body = assert_problem(response, ErrorCode.INTERNAL_ERROR)
    assert "column" not in body["detail"]
    assert any(r.exc_info and "column 7" in str(r.exc_info[1]) for r in caplog.records)


async def test_store_unavailable_is_503_with_retry_after(
    api: Api, store: AnyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store outage on a read is 503 store_unavailable with Retry-After."""

    async def down(transfer_id: str) -> Any:
        raise UnavailableError("shard shard-0: database is locked")

    monkeypatch.setattr(store, "get_transfer", down)
    response = await api.client.get("/v1/transfers/t1")
    body = assert_problem(response, ErrorCode.STORE_UNAVAILABLE)
    assert response.headers["retry-after"] == "1"
    assert "locked" in body["detail"]


async def test_metrics_show_each_processors_calls_and_breaker_state(api: Api) -> None:
    """Processor connectors count on the process-wide registry; /metrics serves it too,
    so breaker states and call outcomes are visible next to the HTTP metrics."""
    guarded = ResilientConnector(ScriptedConnector("acq-metrics"))
    card = CardDetails("4242424242424242", 12, 2030, "123")
    await guarded.authorize(AuthorizeRequest("ref-m1", 100, "USD", card))
    text = (await api.client.get("/metrics")).text
    assert 'processor="acq-metrics"' in text
    assert "paycore_processor_calls_total" in text
    assert "paycore_processor_breaker_state" in text


async def test_metrics_content_type_names_its_charset_once(api: Api) -> None:
    """Prometheus' text format with one charset parameter (it used to come twice, which
    strict parsers refuse)."""
    response = await api.client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize("path", ["/v1/transfers", "/v1/payments", "/v1/accounts/a/close"])
async def test_a_client_that_leaves_mid_body_is_not_a_500(
    api: Api, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A client that disconnects before the end of its body is neither an error log with a
    traceback nor a 500 in the metrics: a 499 (client closed request), logged in one line,
    and nothing is done."""
    await api.account("a")
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"id": "t1", "debit_', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"),
                    (b"content-length", b"200")],
        "client": ("127.0.0.1", 40000), "server": ("test", 80), "state": {},
    }  # fmt: skip
    with caplog.at_level(logging.INFO):
        await api.client.app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] in ([], [499])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    assert "left before sending its whole body" in caplog.text
    text = (await api.client.get("/metrics")).text
    assert f'method="POST",route="{_template(path)}",status="499"}} 1.0' in text
    assert 'status="500"' not in text
    assert (await api.client.get("/v1/accounts/a")).json()["flags"]["closed"] is False


def _template(path: str) -> str:
    return path.replace("/a/", "/{account_id}/")
