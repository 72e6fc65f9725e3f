"""The unit of work: one request's (or one resolver pass's) transactions, the
Idempotency-Key protocol around them, and ``commit(step)``, which writes a step with its
key record and fence and reads the store's answer once (``Committed``).

Idempotency-Key: the key's record lives on the key's own shard (as for every other
POST), so a reuse with another body is always refused. The first transaction claims it
with a *pointer* to the work (``PaymentWrite.key``; a separate write first when the key
lives on another shard); the transaction that records the outcome stores the answer on
the work's shard. A retry then gets the stored answer byte for byte, or 409
``idempotency_key_in_use`` while the work is still processing and nothing was answered.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from paycore.errors import ErrorCode, IdempotencyError, PaycoreError, RequestError, key_in_use
from paycore.payments.flows.context import Context, log
from paycore.payments.flows.model import Reply, ReplyOutcome, View
from paycore.payments.flows.outcomes import (
    Step,
    unknown,
)
from paycore.payments.flows.rows import (
    in_progress,
)
from paycore.storage.base import Fence, Idempotency, StoredResponse
from paycore.storage.payments import (
    POINTER_CONTENT_TYPE,
    AttemptRow,
    KeyWrite,
    PaymentWrite,
    PaymentWriteResult,
)

__all__ = [
    "Committed",
    "Pointer",
    "UnitOfWork",
    "Written",
    "pointer_json",
]

_E = ErrorCode


class Pointer(msgspec.Struct, frozen=True):
    """A claimed key's record while its work runs: which work, on which shard."""

    kind: str  # payment | refund | payout
    id: str
    shard: str
    seq: int  # the attempt the work starts with (a capture or a cancel: not there yet)


pointer_json = msgspec.json.Encoder()
_pointer_decoder = msgspec.json.Decoder(Pointer)


class Written(enum.Enum):
    """What became of a step's write."""

    DONE = "done"
    TAKEN = "taken"  # the key holds another record (nothing written)
    CONFLICT = "conflict"  # a version moved or an id exists (nothing written)
    REFUSED = "refused"  # an account check, a refund bound, a transfer (nothing written)


@dataclass(frozen=True, slots=True)
class Committed:
    """A step's write, read once: its state, the reply (the step's answer once done; the
    key's stored answer when TAKEN), and what the store refused."""

    state: Written
    reply: Reply
    code: ErrorCode  # REFUSED: what was refused (internal_error when unsaid)
    detail: str
    result: PaymentWriteResult  # as the store answered (for the logs)

    def refusal(self) -> RequestError:
        return RequestError(self.code, self.detail)


class UnitOfWork:
    """One request's work under its key (``keyed``; None: no key), or a worker's under
    its ``fence``."""

    def __init__(
        self, ctx: Context, keyed: Idempotency | None, *, fence: Fence | None = None
    ) -> None:
        self.ctx = ctx
        self.keyed = keyed
        self.fence = fence

    async def commit(
        self,
        step: Step,
        *,
        claim: KeyWrite | None = None,
        settle: bool = False,
        replayed: bool = False,
    ) -> Committed:
        """Write ``step`` in one transaction. Under a key, with the answer's record
        (``settle``: unless the key holds a final answer; with ``claim``: inserted as the
        claim was), else with ``claim`` (a pointer, or nothing)."""
        key, reply = claim, Reply(step.answer)
        if step.answer is not None and self.keyed is not None:
            response = self.keyed.render(step.answer)
            mode = "settle" if settle else "claim" if claim is not None else "save"
            key = self._key_write(response, mode)
            reply = Reply(step.answer, response, replayed=replayed)
        result = await self.ctx.write(
            msgspec.structs.replace(step.write, key=key, fence=self.fence)
        )
        if result.key_taken is not None:
            state, reply = Written.TAKEN, Reply(None, result.key_taken[1], replayed=True)
        elif result.ok:
            state = Written.DONE
        else:
            state = Written.CONFLICT if result.conflict else Written.REFUSED
        return Committed(state, reply, result.code or _E.INTERNAL_ERROR, result.detail, result)

    async def start(self, step: Step, claim: KeyWrite | None = None) -> Committed:
        """Commit a flow's first transaction (with the key's claim when the key lives on
        the work's shard): 409 in use when a twin request got there first."""
        committed = await self.commit(step, claim=claim)
        if committed.state in (Written.TAKEN, Written.CONFLICT):
            raise key_in_use()
        return committed

    async def record_refused(self, step: Step, claim: KeyWrite | None) -> Reply:
        """Record work the ledger refused at its start (it exists, failed), answered."""
        committed = await self.commit(step, claim=claim)
        if committed.state is not Written.DONE:
            raise key_in_use()
        return committed.reply

    async def finish(
        self, committed: Committed, kind: str, object_id: str, complaint: str | None = None
    ) -> Reply:
        """The reply of an outcome's transaction; when it did not commit, the work as it
        is now (someone else moved it on; a refusal is logged with ``complaint``)."""
        if committed.state is Written.DONE:
            return committed.reply
        if complaint is not None and committed.state is not Written.CONFLICT:
            log.error(complaint, object_id, committed.result)
        return await self.current(kind, object_id)

    async def record_unknown(self, view: View, done: AttemptRow) -> Reply:
        """An AMBIGUOUS answer to ``done``: recorded, the work stays in flight (the
        resolver asks the processor again)."""
        return (await self.commit(unknown(view, done))).reply

    async def move_on(self, write: PaymentWrite, attempts: list[AttemptRow]) -> bool:
        """Record a failed attempt and the next one (``write.attempts``: both) before the
        next call, so a crash never leaves a call unrecorded; ``attempts`` then ends with
        them. False: someone else recorded an end meanwhile."""
        if (await self.commit(Step(write))).state is not Written.DONE:
            return False
        attempts[-1:] = write.attempts
        return True

    async def current(self, kind: str, object_id: str) -> Reply:
        """Someone else moved the work on: answer with what it is now."""
        view = await self.ctx.find(kind, object_id)
        if self.keyed is None:
            return Reply(view)
        return await self.settle(view, view.shard)

    async def settle(self, outcome: ReplyOutcome, shard: str, *, replayed: bool = False) -> Reply:
        """Store ``outcome`` as the key's answer on ``shard`` unless it has one already
        (then that one is the reply)."""
        step = Step(PaymentWrite(shard=shard), outcome)
        return (await self.commit(step, settle=True, replayed=replayed)).reply

    # -- Idempotency-Key -----------------------------------------------------------------------

    def key_home(self, key: str) -> str:
        return self.ctx.shard_of(key)

    def _key_write(self, response: StoredResponse, mode: str) -> KeyWrite:
        keyed = self.keyed
        assert keyed is not None
        return KeyWrite(keyed.key, keyed.fingerprint, response, keyed.retention_seconds, mode)

    async def seen(self) -> Reply | Pointer | None:
        """A replay, the pointer of work started under the key, or None (a new key)."""
        keyed = self.keyed
        assert keyed is not None
        home = self.key_home(keyed.key)
        now = self.ctx.clock()
        found = await self.ctx.reads(home).key_record(keyed.key)
        if found is None or found[2] <= now:
            return None
        if found[0] != keyed.fingerprint:
            raise IdempotencyError(
                _E.IDEMPOTENCY_KEY_REUSED,
                "this Idempotency-Key was first used with a different request",
            )
        if found[1].content_type != POINTER_CONTENT_TYPE:
            return Reply(None, found[1], replayed=True)
        pointer = _pointer_decoder.decode(found[1].body)
        if pointer.shard != home:
            final = await self.ctx.reads(pointer.shard).key_record(keyed.key)
            if final is not None and final[2] > now and final[0] == keyed.fingerprint:
                return Reply(None, final[1], replayed=True)
        return pointer

    async def replay_or_resume(self) -> Reply | Pointer | None:
        """For a keyed request: its answer if it has one; the pointer of its work when
        that never got going (to resume it); else None (run it). 409 while it runs."""
        if self.keyed is None:
            return None
        seen = await self.seen()
        if not isinstance(seen, Pointer):
            return seen
        found = await self.ctx.locate(seen.kind, seen.id)
        if found is None:
            return seen  # claimed, then the process died before the work was recorded
        view = await self.ctx.view(seen.kind, *found)
        if seen.seq and not _recorded(view.attempts, seen.seq, self.keyed.key):
            return seen  # a capture or cancel claimed but never recorded: run it again
        if in_progress(view):
            raise key_in_use()
        # The work ended without an answer (its request died): answer with what it is now.
        return await self.settle(view, view.shard, replayed=True)

    def attempt_key(self) -> str:
        """What a capture's or cancel's attempt records of the request's key."""
        return "" if self.keyed is None else self.keyed.key

    async def claim(
        self, *, resumed: bool, kind: str, object_id: str, shard: str, seq: int
    ) -> KeyWrite | None:
        """Claim the key for work on ``shard``: the pointer to write with the work's first
        transaction when the key lives there, else written on the key's shard now."""
        if self.keyed is None or resumed:
            return None
        body = pointer_json.encode(Pointer(kind, object_id, shard, seq))
        pointer = self._key_write(StoredResponse(102, body, POINTER_CONTENT_TYPE), "claim")
        home = self.key_home(self.keyed.key)
        if home == shard:
            return pointer
        claimed = await self.commit(Step(PaymentWrite(shard=home)), claim=pointer)
        if claimed.state is not Written.DONE:
            raise key_in_use()  # a twin request claimed it a moment ago
        return None

    async def refuse(self, exc: PaycoreError, *, resumed: bool = False) -> Reply:
        """Answer a refusal that wrote nothing; under a key it is stored (unless a retry
        may succeed: unavailable shards or processors), so a retry gets it again.

        ``resumed``: the request took over work its key claimed but had not recorded. The
        claiming request may have recorded it since (it was slow, not dead), and the
        refusal may be that very work in progress: then the key answers as that work does
        (409 ``idempotency_key_in_use`` while it runs), never with the refusal."""
        if self.keyed is None or exc.retryable:
            raise exc
        if resumed:
            again = await self.replay_or_resume()
            if isinstance(again, Reply):
                return again
        return await self.settle(exc, self.key_home(self.keyed.key))

    async def free_key(self, shard: str) -> None:
        """After a retryable answer (no processor could take it; nothing changed): leave
        the key free, so the client's retry runs the operation again instead of replaying
        the 503 for the key's whole retention. The record stays, expired at once, on the
        work's shard and on the key's own shard (where its pointer is)."""
        if self.keyed is None:
            return
        keyed = self.keyed
        gone = KeyWrite(keyed.key, keyed.fingerprint, StoredResponse(503, b"{}"), 0, "save")
        homes = {shard, self.key_home(keyed.key)}
        for home in homes:
            await self.commit(Step(PaymentWrite(shard=home)), claim=gone)


def _recorded(attempts: Sequence[AttemptRow], seq: int, key: str) -> bool:
    """Whether a key's claimed capture or cancel (planned as attempt ``seq``) was recorded:
    an attempt from ``seq`` on that carries the key (another request's attempt of the same
    number is not it); one made before attempts carried keys (None) is taken to be it."""
    return any(a.seq >= seq and a.idempotency_key in (key, None) for a in attempts)
