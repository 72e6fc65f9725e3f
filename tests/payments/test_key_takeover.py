"""A capture's key taken over by a retry while its first request was only slow (found by
the chaos run: a node paused longer than the key's lock lease between claiming the key
and recording the capture; the retry on the other node resumed the claimed work). The
capture must happen once: the slow request, when it wakes up and finds the payment
moved, answers with the work its key did, and never plans a second capture."""

from __future__ import annotations

from pathlib import Path

import pytest

from paycore.payments.processors.base import Operation
from payments.payment_support import KEY, two_nodes


@pytest.mark.parametrize("operation", ["capture", "cancel"])
async def test_a_slow_request_whose_key_a_retry_took_over_does_not_act_twice(
    tmp_path: Path, operation: str
) -> None:
    """A claims the key and stalls before its first write; the retry on B resumes the
    claimed work and finishes it (200). When A goes on, it answers with that same work:
    one processor call, the amount once."""
    async with two_nodes(tmp_path) as nodes:
        payment_id = await nodes.manual_payment(1000)
        path = f"/v1/payments/{payment_id}/{operation}"
        body = {"amount": 400} if operation == "capture" else None
        first = await nodes.stalled(path, body)
        taken_over = await nodes.b.post(path, json=body, headers={KEY: nodes.key})
        nodes.go.set()
        slow = await first
        retry = await nodes.b.post(path, json=body, headers={KEY: nodes.key})
        called = Operation.CAPTURE if operation == "capture" else Operation.VOID
        assert nodes.acquirer.count(called) == 1
        done = (await nodes.service.get_payment(payment_id)).payment
    expected = ("requires_capture", 400) if operation == "capture" else ("canceled", 0)
    assert (done.status, done.amount_captured) == expected
    assert taken_over.status_code == slow.status_code == 200, (taken_over.text, slow.text)
    assert slow.json() == taken_over.json() == retry.json()


async def test_another_keys_capture_of_the_same_number_is_not_taken_for_the_claimed_one(
    tmp_path: Path,
) -> None:
    """A claims its key for attempt N and stalls; meanwhile another request (its own key)
    captures, as attempt N. A's claimed work was not done: A captures too (both amounts),
    and a retry of A's key answers with A's capture, not as if the other one were it."""
    async with two_nodes(tmp_path) as nodes:
        payment_id = await nodes.manual_payment(1000)
        path = f"/v1/payments/{payment_id}/capture"
        first = await nodes.stalled(path, {"amount": 400})
        other = await nodes.b.post(path, json={"amount": 300}, headers={KEY: "other"})
        nodes.go.set()
        slow = await first
        retry = await nodes.b.post(path, json={"amount": 400}, headers={KEY: nodes.key})
        assert nodes.acquirer.count(Operation.CAPTURE) == 2
    assert other.status_code == slow.status_code == retry.status_code == 200
    assert slow.json()["amount_captured"] == 700
    assert retry.json() == slow.json()
