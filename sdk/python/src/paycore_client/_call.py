"""One API operation as a value: method, path, query, body, and how to read the answer.

The resource services build a ``Call`` (pure: no I/O) and hand it to the sync or
async client, which sends it, retries it and decodes the answer. So each operation's
shape is written once, for both clients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import msgspec

__all__ = ["Call", "PageBody", "body_of", "decoder_for", "path", "query_of"]

T = TypeVar("T")


class PageBody(msgspec.Struct, Generic[T], frozen=True):
    """A list answer as sent: ``{data, next_cursor}``."""

    data: list[T]
    next_cursor: str | None = None


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder_for(kind: type[T]) -> Callable[[bytes], T]:
    """A decoder of ``kind`` (built once per type: msgspec compiles it)."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder.decode


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """``idempotency_key``: the caller's own for a POST; None lets the client make one."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    decode: Callable[[bytes], T]
    query: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    idempotency_key: str | None = None


def path(*segments: str) -> str:
    """``/v1/...`` from literal segments and ids, each id percent-encoded so that no
    value can change the route (``..``, ``/``, ``?``)."""
    parts = []
    for segment in segments:
        encoded = quote(segment, safe=":")
        parts.append(encoded.replace(".", "%2E") if encoded in {".", ".."} else encoded)
    return "/" + "/".join(parts)


def _text(name: str, value: object) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: a datetime with a timezone is needed, not a naive one")
        return value.isoformat()
    raise TypeError(f"{name}: {type(value).__name__} is not a query value")


def query_of(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Query parameters, in the server's spelling: booleans ``true``/``false``, times RFC
    3339, ``metadata={"k": "v"}`` as ``metadata[k]=v``; None values are left out."""
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        if name == "metadata":
            query.extend((f"metadata[{k}]", _text(f"metadata[{k}]", v)) for k, v in value.items())
        else:
            query.append((name, _text(name, value)))
    return tuple(query)


_MONEY_FIELDS = frozenset({"amount", "credit_limit"})


def _check_money(value: Any, where: str) -> None:
    """Refuse a float (or a bool) where money goes: money is integer minor units, and a
    float amount is a bug in the caller, better caught here than rounded anywhere."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if (
                key in _MONEY_FIELDS
                and item is not None
                and (isinstance(item, bool) or not isinstance(item, int))
            ):
                raise TypeError(f"{where}{key} must be an int of minor units, not {item!r}")
            if key != "metadata":
                _check_money(item, f"{where}{key}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_money(item, f"{where}{i}.")


def body_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON body from keyword arguments: as given, None values left out (the server
    applies its defaults)."""
    body = {k: v for k, v in params.items() if v is not None}
    _check_money(body, "")
    return body
