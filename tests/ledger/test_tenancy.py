"""Tenant-scoped ids (``paycore.ledger.tenancy``): a client id maps into its tenant's
namespace and back unchanged; two tenants' ids never meet; paycore's own ids are shared;
a client id holding a "/" names nothing; webhooks show account ids as the tenant knows
them."""

from __future__ import annotations

import string

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from paycore.ledger.model import is_valid_client_id, is_valid_id
from paycore.ledger.tenancy import (
    client_detail,
    client_id,
    internal_account_id,
    internal_transfer_id,
)
from paycore.payments.webhooks import event_body
from paycore.storage.payments import EventRow
from strategies import valid_ids

tenants = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=64)
either = st.sampled_from([internal_account_id, internal_transfer_id])


@given(tenants, valid_ids, either)
def test_a_client_id_round_trips_through_its_namespace(tenant: str, cid: str, into: object) -> None:
    """The store keeps a valid id, and answers show the client's own id again."""
    assert callable(into)
    stored = into(tenant, cid)
    assert is_valid_id(stored)
    assert client_id(tenant, stored) == cid


@given(tenants, tenants, valid_ids, valid_ids, either)
def test_two_tenants_ids_never_meet(t1: str, t2: str, x: str, y: str, into: object) -> None:
    """Two tenants' ids are two stored ids, but for paycore's own (shared) ids."""
    assert callable(into)
    if into(t1, x) == into(t2, y):
        assert x == y
        assert t1 == t2 or x.startswith(("clearing:", "psp:", "xs.", "pm."))


def test_the_default_tenant_keeps_ids_and_others_prefix_them() -> None:
    assert internal_account_id("default", "a1") == "a1"
    assert internal_account_id("acme", "a1") == "acme/a1"
    assert internal_transfer_id("acme", "t1") == "acme/t1"
    # paycore's own ids are shared by every tenant (clients may not create them).
    assert internal_account_id("acme", "clearing:s0:s1:USD") == "clearing:s0:s1:USD"
    assert internal_account_id("acme", "psp:s0:sim:USD") == "psp:s0:sim:USD"
    assert internal_transfer_id("acme", "pm.pay_1.h1") == "pm.pay_1.h1"
    assert internal_transfer_id("acme", "xs.post.abc") == "xs.post.abc"
    # ...of their kind only: a transfer id may not name a shared account id and back.
    assert internal_transfer_id("acme", "clearing:x") == "acme/clearing:x"
    assert internal_account_id("acme", "pm.x") == "acme/pm.x"


@given(st.sampled_from(["default", "acme"]), tenants, valid_ids)
def test_a_client_id_with_a_slash_names_nothing(caller: str, owner: str, cid: str) -> None:
    """Only a path could bring one: it never reaches another tenant's id, nor any id."""
    spelled = f"{owner}/{cid}"
    for into in (internal_account_id, internal_transfer_id):
        stored = into(caller, spelled)
        assert stored != spelled
        assert not is_valid_id(stored)
        assert client_id(caller, stored) == spelled


def test_client_and_stored_id_validity() -> None:
    assert is_valid_client_id("a1")
    assert is_valid_id("a1")
    assert not is_valid_client_id("acme/a1")
    assert is_valid_id("acme/a1")
    for bad in ("/a1", "acme/", "a/b/c", "ac:me/a1", "x" * 65 + "/a1", "acme/a 1"):
        assert not is_valid_id(bad), bad


def test_details_show_the_callers_ids() -> None:
    detail = "debit account 'acme/a1' not found; posted by 'acme/post_1'; shard 'shard-1'"
    assert client_detail("acme", detail) == (
        "debit account 'a1' not found; posted by 'post_1'; shard 'shard-1'"
    )
    assert client_detail("default", "account 'a1' not found") == "account 'a1' not found"
    # Only the caller's own prefix, at the start of a quoted id.
    assert client_detail("acme", "account 'xacme/a1'") == "account 'xacme/a1'"


def test_a_webhook_shows_account_ids_as_its_tenant_knows_them() -> None:
    payload = {"object": "payment", "id": "pay_1", "merchant_account_id": "acme/m1"}
    event = EventRow("evt_1", "payment.succeeded", "pay_1", msgspec.json.encode(payload).decode(),
                     1, tenant="acme")  # fmt: skip
    body = msgspec.json.decode(event_body(event))
    assert body["data"]["object"]["merchant_account_id"] == "m1"
    assert event_body(event) == event_body(event)  # the same bytes on every attempt
    payout = {"object": "payout", "id": "po_1", "wallet_account_id": "w1"}
    default = EventRow("evt_2", "payout.paid", "po_1", msgspec.json.encode(payout).decode(), 1,
                       tenant="default")  # fmt: skip
    assert msgspec.json.decode(event_body(default))["data"]["object"] == payout
