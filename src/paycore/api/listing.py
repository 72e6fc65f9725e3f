"""The query of a list endpoint (``GET /v1/accounts``, ``/v1/transfers``, ``/v1/payments``,
``/v1/refunds``, ``/v1/payouts``): its filters read strictly, its cursor, its page.

Every refusal is a 422 ``invalid_request`` naming the parameter and what it takes, and
is raised before anything is read: a query parameter the endpoint does not know (a typo
must not silently list everything), one given twice, a value of the wrong form.

A cursor is opaque to clients: the URL-safe base64 of ``<time ns>:<id>``, the key of the
last row of the page it came with (``paycore.storage.listing``), so the next page starts
strictly after that row, on every shard alike.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from paycore.api.schemas import MAX_METADATA_KEY_LENGTH, MAX_METADATA_STRING_LENGTH, parse_rfc3339
from paycore.config import Settings
from paycore.errors import ErrorCode, RequestError
from paycore.ledger.model import is_valid_client_id, is_valid_id
from paycore.storage.listing import MAX_TIME, Keyset, Page

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_METADATA_FILTERS",
    "ListQuery",
    "bad_cursor",
    "check_limit",
    "decode_list_cursor",
    "decode_opaque_cursor",
    "encode_list_cursor",
    "encode_opaque_cursor",
]

DEFAULT_PAGE_SIZE: Final = 100  # as GET /v1/accounts/{id}/transfers (within max_page_size)
MAX_METADATA_FILTERS: Final = 10
_PAGE_PARAMS: Final = frozenset({"limit", "cursor", "order"})
_MAX_CURSOR_LENGTH: Final = 256  # base64 of 19 digits, ":" and an id of up to 129 chars
T = TypeVar("T")


def encode_opaque_cursor(raw: bytes) -> str:
    """``raw`` as an opaque cursor: URL-safe base64 without its padding."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_opaque_cursor(cursor: str, parse: Callable[[bytes], T]) -> T:
    """What ``parse`` reads from the bytes of ``cursor``; 422 ``invalid_request`` for a
    cursor this API did not hand out (too long, not base64, or ``parse`` raises
    ValueError)."""
    if len(cursor) > _MAX_CURSOR_LENGTH or not cursor.isascii():
        raise bad_cursor()
    try:
        return parse(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:  # binascii.Error and msgspec.DecodeError are ValueErrors
        raise bad_cursor() from None


def encode_list_cursor(key: Keyset | None) -> str | None:
    return None if key is None else encode_opaque_cursor(f"{key[0]}:{key[1]}".encode())


def decode_list_cursor(cursor: str | None) -> Keyset | None:
    return None if cursor is None else decode_opaque_cursor(cursor, _keyset)


def _keyset(raw: bytes) -> Keyset:
    time, _, row_id = raw.decode("ascii").partition(":")
    if not (time.isdigit() and len(time) <= 19 and int(time) <= MAX_TIME and is_valid_id(row_id)):
        raise ValueError(raw)
    return int(time), row_id


def _refuse(detail: str) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, detail)


def bad_cursor() -> RequestError:
    """422 ``invalid_request`` for a cursor this API did not hand out."""
    return _refuse("cursor is not one this API handed out")


def check_limit(limit: int, settings: Settings) -> int:
    """``limit`` when a page may hold that many (1..``max_page_size``); else 422."""
    if not 1 <= limit <= settings.max_page_size:
        raise _refuse(f"limit must be in 1..{settings.max_page_size}")
    return limit


class ListQuery:
    """The query parameters of one list request, checked as they are read.

    ``known``: the endpoint's filters (the page's ``limit``, ``cursor``, ``order`` are
    always known); ``metadata``: whether ``metadata[<key>]=<value>`` filters are too.
    """

    def __init__(
        self, params: Any, known: Iterable[str], *, metadata: bool = False
    ) -> None:  # params: Litestar's query MultiDict
        self._params = params
        allowed = _PAGE_PARAMS | frozenset(known)
        for name in dict.fromkeys(params.keys()):
            if name.startswith("metadata[") and metadata:
                continue
            if name not in allowed:
                known_text = ", ".join(
                    sorted(allowed | ({"metadata[<key>]"} if metadata else set()))
                )
                raise _refuse(f"unknown query parameter {name!r}; this list takes {known_text}")
            if len(params.getall(name)) > 1:
                raise _refuse(f"query parameter {name!r} is given more than once")

    def text(self, name: str) -> str | None:
        value: str | None = self._params.get(name)
        return value

    def page(self, settings: Settings) -> Page:
        raw = self.text("limit")
        limit = min(DEFAULT_PAGE_SIZE, settings.max_page_size)
        if raw is not None:
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 7):
                raise _refuse(f"limit must be an integer in 1..{settings.max_page_size}")
            limit = int(raw)
        check_limit(limit, settings)
        order = self.choice("order", ("asc", "desc")) or "asc"
        return Page(limit, decode_list_cursor(self.text("cursor")), descending=order == "desc")

    def choice(self, name: str, values: Iterable[str]) -> str | None:
        value = self.text(name)
        options = tuple(values)
        if value is not None and value not in options:
            raise _refuse(f"{name} must be one of {', '.join(options)}, not {value!r}")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.choice(name, ("true", "false"))
        return None if value is None else value == "true"

    def client_id(self, name: str) -> str | None:
        """An id as the client knows it (1-64 chars of ``[A-Za-z0-9_.:-]``)."""
        value = self.text(name)
        if value is not None and not is_valid_client_id(value):
            raise _refuse(f"{name} must be an id of 1-64 characters of [A-Za-z0-9_.:-]")
        return value

    def currency(self, name: str = "currency") -> str | None:
        value = self.text(name)
        if value is not None and not (len(value) == 3 and value.isascii() and value.isupper()):
            raise _refuse(f"{name} must be an ISO 4217 code of three capital letters")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        if not (
            value.isascii() and value.isdigit() and len(value) <= 10 and low <= int(value) <= high
        ):
            raise _refuse(f"{name} must be an integer in {low}..{high}")
        return int(value)

    def created(self) -> tuple[int | None, int | None]:
        """``created_gte`` and ``created_lt``: RFC 3339 date-times, as ``at`` takes them."""
        bounds: list[int | None] = []
        for name in ("created_gte", "created_lt"):
            value = self.text(name)
            if value is None:
                bounds.append(None)
                continue
            try:
                bounds.append(parse_rfc3339(value))
            except ValueError as exc:
                raise _refuse(f"{name}: {exc}") from None
        return bounds[0], bounds[1]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """``metadata[<key>]=<value>`` filters: the key a top-level key of the metadata,
        holding that string."""
        pairs: list[tuple[str, str]] = []
        for name in dict.fromkeys(self._params.keys()):
            if not name.startswith("metadata["):
                continue
            key = name[len("metadata[") : -1] if name.endswith("]") else ""
            if not 1 <= len(key) <= MAX_METADATA_KEY_LENGTH:
                raise _refuse(
                    f"query parameter {name!r}: a metadata filter is metadata[<key>]=<value>, "
                    f"with a key of 1-{MAX_METADATA_KEY_LENGTH} characters"
                )
            value = self._params.get(name)
            if len(value) > MAX_METADATA_STRING_LENGTH:
                raise _refuse(f"{name}: at most {MAX_METADATA_STRING_LENGTH} characters")
            pairs.append((key, value))
        if len(pairs) > MAX_METADATA_FILTERS:
            raise _refuse(f"at most {MAX_METADATA_FILTERS} metadata filters")
        return tuple(pairs)
