"""A write command cut per shard (``Split``), and what every step of the cut shares.

``paycore.cluster.dispatch`` (and, on one shard, ``paycore.cluster.reserved``) fill a
``Split``: which items go to which shard, which are answered up front, which became
sagas; ``merge`` puts the shards' answers back in request order. Kept apart from the
router so that the modules of the cut can use it without importing the router.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from paycore.cluster.concurrently import gather_all
from paycore.cluster.settlement import present_result
from paycore.errors import ErrorCode
from paycore.ledger.model import TransferRequest, TransferView
from paycore.ledger.rules import TransferResult
from paycore.storage.base import OutboxWrite

__all__ = ["Split", "check_chains", "fail", "gather_all"]

T = TypeVar("T")
_E = ErrorCode


def fail(item_id: str, code: ErrorCode, detail: str = "") -> TransferResult:
    return TransferResult(id=item_id, code=code, detail=detail)


@dataclass
class Split:
    """A command cut per shard: which items go where, and what was answered up front."""

    size: int
    parts: dict[str, list[int]] = field(default_factory=dict)  # shard -> item indices
    upfront: dict[int, Any] = field(default_factory=dict)  # index -> result
    rewritten: dict[int, TransferRequest] = field(default_factory=dict)
    outbox: dict[int, OutboxWrite] = field(default_factory=dict)  # index -> write (index 0)
    sagas: set[int] = field(default_factory=set)
    # index -> (source shard, hold) of a client's post or void of a cross-shard hold
    resolves: dict[int, tuple[str, TransferView]] = field(default_factory=dict)
    target: dict[int, str] = field(default_factory=dict)  # index -> shard writing it
    # index -> (code, detail): a cross-shard item refused with both accounts in view,
    # sent to its debit account's shard to be answered there (after the id's own
    # checks) and kept when one shard would keep it
    decided: dict[int, tuple[ErrorCode, str]] = field(default_factory=dict)
    # owner shard -> indices whose id was bound there to the shard writing them
    reserved: dict[str, list[int]] = field(default_factory=dict)

    def add(self, shard: str, index: int) -> None:
        self.parts.setdefault(shard, []).append(index)
        self.target[index] = shard

    def merge(self, answers: Mapping[str, list[Any]]) -> list[Any]:
        merged: list[Any] = [None] * self.size
        for index, result in self.upfront.items():
            merged[index] = result
        for shard, indices in self.parts.items():
            for index, result in zip(indices, answers[shard], strict=True):
                # A refused cross-shard item (``decided``) is sent as step 1 would be, so
                # the shard may answer it with a saga's stored hold (the same id created
                # earlier, or by this batch): shown as the client's transfer too.
                shown = index in self.sagas or index in self.resolves or index in self.decided
                merged[index] = present_result(result) if shown else result
        return merged


def check_chains(
    requests: Sequence[TransferRequest],
    target: Mapping[int, str],
    cross: Mapping[int, str],
    split: Split,
) -> None:
    """Refuse linked chains spanning shards; fail a chain with an item refused up front."""
    start: int | None = None
    for index, r in enumerate(requests):
        if start is None and r.flags.linked:
            start = index
        if start is None or (r.flags.linked and index < len(requests) - 1):
            continue
        chain = range(start, index + 1)
        start = None
        if requests[chain[-1]].flags.linked:  # the batch ended with the chain open
            for i in chain:
                split.upfront[i] = fail(requests[i].id, _E.LINKED_EVENT_CHAIN_OPEN)
            continue
        # A chain spanning shards never comes here (``paycore.cluster.chains``).
        if any(i in split.upfront for i in chain):
            for i in chain:
                split.upfront.setdefault(i, fail(requests[i].id, _E.LINKED_EVENT_FAILED))
