"""``POST /v1/processor_events/{processor}``: notifications a payment processor sends us.

A processor that has a ``webhook_secret`` (``[[processors]]``) signs each notification
with it, as paycore signs its own webhooks (``Paycore-Signature: t=..,v1=..``, see
``paycore.payments.webhooks``). The handler, in this order:

1. 404 ``not_found`` for a processor that is unknown or has no secret (the two are not
   told apart);
2. 401 ``invalid_signature`` unless the signature verifies over the raw body, with a
   timestamp within 300 s;
3. 415 ``unsupported_media_type`` unless the body says it is JSON (as on every route:
   ``paycore.api.bodies``); 422 ``invalid_request`` unless it is a JSON object, nested at
   most ``MAX_BODY_DEPTH`` levels, with a string ``id``, ``type`` and, optionally,
   ``reference`` (other fields are kept, not read);
4. keeps it once per (processor, id), in ``processor_events`` on the shard that key
   hashes to: 200 ``{"received": true, "duplicate": false}`` the first time,
   ``{"received": true, "duplicate": true}`` for any later copy (concurrent ones
   included), never an error.

A notification is a hint, not a fact: it moves no money and changes no payment. The
resolver's status lookups by reference (``PaymentService.resolve_processing``) remain
the source of truth for a payment left ``processing``; the stored notifications say
what the processor claimed and when (``processor_events_by_reference``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from paycore.api.bodies import check_depth, read_body, require_json_type
from paycore.api.routes._docs import documented
from paycore.api.schemas import describe_pattern, in_words
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.payments.webhooks import SIGNATURE_HEADER, SignatureError, verify_signature
from paycore.storage.payments import ProcessorEventRow, RecordProcessorEvent
from paycore.storage.store import Store

__all__ = ["ProcessorEventIn", "ProcessorEventOut", "processor_event_routes"]

_JSON: Final = "application/json"
# Printable ASCII without spaces: what processors use for event ids and references.
_PRINTABLE: Final = describe_pattern(
    r"^[\x21-\x7e]{1,255}$", "1-255 printable ASCII characters without spaces"
)
_EVENT_TYPE: Final = describe_pattern(
    r"^[A-Za-z0-9_.:-]{1,100}$", "1-100 characters: letters, digits, '_', '.', ':', '-'"
)


class ProcessorEventIn(msgspec.Struct, frozen=True):
    """A processor's notification (other fields are allowed and kept as sent)."""

    id: Annotated[str, msgspec.Meta(pattern=_PRINTABLE)]
    type: Annotated[str, msgspec.Meta(pattern=_EVENT_TYPE)]
    reference: Annotated[str, msgspec.Meta(pattern=_PRINTABLE)] | None = None


class ProcessorEventOut(msgspec.Struct, frozen=True):
    """The notification is kept (``duplicate``: it was already)."""

    received: bool
    duplicate: bool


_ANSWERS: Final = {
    duplicate: msgspec.json.encode(ProcessorEventOut(received=True, duplicate=duplicate))
    for duplicate in (False, True)
}


def processor_event_routes(
    store: Store, settings: Settings, *, clock: Callable[[], float] = time.time
) -> list[HTTPRouteHandler]:
    """The handler, bound to ``store`` and the processors' secrets in ``settings``;
    ``clock``: seconds, for the signature's tolerance window."""
    secrets = {p.name: p.webhook_secret for p in settings.processors if p.webhook_secret}
    decode = msgspec.json.Decoder(ProcessorEventIn)

    def home(key: str) -> Store:
        """The shard keeping the notification ``key`` (payment commands name their shard:
        the router does not place them)."""
        return store.shard_stores[store.shard_of(key)]

    @post(
        "/v1/processor_events/{processor:str}",
        operation_class=documented({200: ProcessorEventOut}, body=ProcessorEventIn),
        tags=["payments"],
        status_code=200,
        # No API key: a processor proves itself by the notification's signature.
        opt={"public": True},
    )
    async def receive_processor_event(
        request: Request[Any, Any, Any], processor: FromPath[str]
    ) -> Response[bytes]:
        """A processor's signed notification, kept once per event id."""
        secret = secrets.get(processor)
        if secret is None:
            raise RequestError(
                ErrorCode.NOT_FOUND, f"no processor {processor[:64]!r} posts events here"
            )
        raw = await read_body(request)
        try:
            verify_signature(request.headers.get(SIGNATURE_HEADER), raw, secret, now=int(clock()))
        except SignatureError as exc:
            raise RequestError(ErrorCode.INVALID_SIGNATURE, str(exc)) from None
        require_json_type(request, raw)
        check_depth(raw)  # fields we do not read are kept as sent, but still bounded
        try:
            event = decode.decode(raw)
            body = raw.decode("utf-8")
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            detail = f"not a processor event: {in_words(str(exc))}"
            raise RequestError(ErrorCode.INVALID_REQUEST, detail) from None
        except RecursionError:  # not reached after check_depth; the last line of defence
            detail = "not a processor event: it nests too deeply"
            raise RequestError(ErrorCode.INVALID_REQUEST, detail) from None
        key = f"{processor}:{event.id}"
        shard = home(key)
        row = ProcessorEventRow(
            processor=processor,
            id=event.id,
            type=event.type,
            reference=event.reference,
            body=body,
        )
        new: bool = await shard.execute(RecordProcessorEvent(shard.name, row))
        return Response(_ANSWERS[not new], status_code=200, media_type=_JSON)

    return [receive_processor_event]
