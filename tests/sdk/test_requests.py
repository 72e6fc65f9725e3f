"""How calls are spelled on the wire: paths, query parameters, bodies (no server)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from paycore_client import APIConnectionError, NotFoundError, Paycore
from paycore_client._call import body_of, path, query_of


def test_ids_in_paths_cannot_change_the_route() -> None:
    """Ids are percent-encoded; ``.`` and ``..`` alone are too."""
    assert path("v1", "accounts", "acme:w-1.x") == "/v1/accounts/acme:w-1.x"
    assert path("v1", "accounts", "a/b?c") == "/v1/accounts/a%2Fb%3Fc"
    assert path("v1", "transfers", "..", "post") == "/v1/transfers/%2E%2E/post"


def test_query_parameters_in_the_servers_spelling() -> None:
    """Booleans as true/false, times as RFC 3339, metadata as metadata[key]; None left out."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    query = query_of({"closed": False, "limit": 5, "created_gte": at, "cursor": None,
                      "metadata": {"team": "ops", "tier": "gold"}})  # fmt: skip
    assert query == (
        ("closed", "false"),
        ("limit", "5"),
        ("created_gte", "2026-01-02T03:04:05+02:00"),
        ("metadata[team]", "ops"),
        ("metadata[tier]", "gold"),
    )
    with pytest.raises(ValueError, match="timezone"):
        query_of({"created_lt": datetime(2026, 1, 1)})


@pytest.mark.parametrize("amount", [12.5, 10.0, True, "100"])
def test_money_must_be_an_int_before_anything_is_sent(amount: Any) -> None:
    """A float, bool or string amount is refused in the client, at any depth."""
    with pytest.raises(TypeError, match="minor units"):
        body_of({"amount": amount})
    with pytest.raises(TypeError, match="minor units"):
        body_of({"transfers": [{"id": "t", "amount": amount}]})
    with pytest.raises(TypeError, match="minor units"):
        body_of({"flags": {"credit_limit": amount}})


def test_metadata_is_the_callers_own_and_not_checked_as_money() -> None:
    """Metadata may hold a float under any key: it is the caller's JSON."""
    assert body_of({"metadata": {"amount": 1.5}, "amount": 3}) == {
        "metadata": {"amount": 1.5},
        "amount": 3,
    }


def test_a_list_call_sends_filters_and_follows_the_cursor() -> None:
    """list() sends the filters; the next page repeats them with ``cursor``."""
    seen: list[httpx.URL] = []
    pages = [{"data": [], "next_cursor": "c1"}, {"data": [], "next_cursor": None}]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=pages[len(seen) - 1])

    client = Paycore("k", base_url="http://x.test", transport=httpx.MockTransport(handle))
    page = client.transfers.list(account_id="alice", status="pending", limit=2)
    assert list(page.auto_paging_iter()) == []
    assert [dict(url.params) for url in seen] == [
        {"account_id": "alice", "status": "pending", "limit": "2"},
        {"account_id": "alice", "status": "pending", "limit": "2", "cursor": "c1"},
    ]
    assert all(url.path == "/v1/transfers" for url in seen)


def test_bodies_headers_and_the_bearer_key() -> None:
    """A POST sends its JSON, the key as Bearer, an Idempotency-Key; a void sends ``{}``."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        raise httpx.ConnectError("down", request=request)

    client = Paycore("pk_live_x", base_url="http://x.test/", max_network_retries=0,
                     transport=httpx.MockTransport(handle))  # fmt: skip
    with pytest.raises(APIConnectionError, match="could not reach"):
        client.transfers.void_pending("h1")
    request = requests[0]
    assert request.url == "http://x.test/v1/transfers/h1/void"
    assert request.headers["authorization"] == "Bearer pk_live_x"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"]
    assert request.content == b"{}"


def test_an_open_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a key (and no PAYCORE_API_KEY) no Authorization header is sent."""
    monkeypatch.delenv("PAYCORE_API_KEY", raising=False)
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(404, json={"code": "account_not_found", "detail": "no"})

    client = Paycore(base_url="http://x.test", transport=httpx.MockTransport(handle))
    with pytest.raises(NotFoundError, match="account_not_found"):
        client.accounts.retrieve("a")
    assert "authorization" not in sent[0].headers
