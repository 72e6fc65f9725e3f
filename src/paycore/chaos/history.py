"""The history of a chaos run: one record per HTTP attempt, as JSON lines.

A client's logical operation (``op``: a transfer, a capture, ...) is sent once, then
retried with the same Idempotency-Key and body while its answer is ambiguous; each
attempt is one ``Attempt`` with its request, when it was invoked and completed (monotonic
and wall clock), which node it went to, and what came back.

An attempt's ``outcome`` is Jepsen's: ``ok`` a definite success (any 2xx, a replay
included), ``fail`` a definite failure (a 4xx the contract says changed nothing, or a
connection that was never made), ``info`` ambiguous (a timeout, a reset connection, a 5xx,
a 409 ``idempotency_key_in_use``: the request may or may not have taken effect).
``op_outcome`` folds the attempts of one operation into its outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import msgspec

__all__ = [
    "Attempt",
    "Call",
    "Outcome",
    "answered",
    "classify",
    "group_ops",
    "op_outcome",
    "read_history",
    "write_history",
]


class Outcome(StrEnum):
    OK = "ok"  # definite success
    FAIL = "fail"  # definite failure: nothing happened
    INFO = "info"  # ambiguous: it may or may not have happened


class Call(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a client sent."""

    method: str
    path: str
    body: Any = None
    idempotency_key: str | None = None


class Attempt(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One HTTP attempt of a logical operation (see the module docstring)."""

    op: int
    client: int
    kind: str
    attempt: int
    request: Call
    invoke_mono: float
    invoke_wall: float
    complete_mono: float
    complete_wall: float
    outcome: Outcome
    node: str = ""
    status: int | None = None
    response: Any = None
    error: str | None = None
    replayed: bool = False

    @property
    def code(self) -> str | None:
        """The problem's stable ``code`` of an error answer."""
        if isinstance(self.response, dict):
            code = self.response.get("code")
            return code if isinstance(code, str) else None
        return None


# Answers after which a retry with the same key may still find the work done (or doing).
_AMBIGUOUS_CODES: Final = frozenset({"idempotency_key_in_use"})


def classify(status: int | None, code: str | None, *, connected: bool = True) -> Outcome:
    """The outcome of one attempt: its HTTP status and problem code, or (``status`` None)
    a transport error, definite only when the connection was never made."""
    if status is None:
        return Outcome.INFO if connected else Outcome.FAIL
    if 200 <= status < 300:
        return Outcome.OK
    if status >= 500 or status == 429 or code in _AMBIGUOUS_CODES:
        return Outcome.INFO
    return Outcome.FAIL


def answered(attempt: Attempt) -> bool:
    """Whether the server gave this attempt a definite answer (kept under its key)."""
    return attempt.status is not None and attempt.outcome is not Outcome.INFO


def op_outcome(attempts: Sequence[Attempt]) -> Outcome:
    """An operation's outcome: ok if any attempt got a 2xx; fail if the server answered
    it with a definite refusal; else ambiguous (a connection refused is no answer)."""
    if any(a.outcome is Outcome.OK for a in attempts):
        return Outcome.OK
    if any(answered(a) for a in attempts):
        return Outcome.FAIL
    return Outcome.INFO


def group_ops(history: Iterable[Attempt]) -> dict[int, list[Attempt]]:
    """The attempts of each operation, in attempt order."""
    ops: dict[int, list[Attempt]] = {}
    for attempt in history:
        ops.setdefault(attempt.op, []).append(attempt)
    for attempts in ops.values():
        attempts.sort(key=lambda a: a.attempt)
    return ops


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Attempt)


def write_history(path: Path, history: Iterable[Attempt]) -> int:
    """Write ``history`` as JSON lines; the number of records."""
    n = 0
    with path.open("wb") as fh:
        for attempt in history:
            fh.write(_encoder.encode(attempt) + b"\n")
            n += 1
    return n


def read_history(path: Path) -> Iterator[Attempt]:
    """The records of a JSON-lines history file."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield _decoder.decode(line)
