"""Wire formats of ``/v1/api_keys``: strict request Structs in, response Structs out.

A key is shown with what its owner may need to manage it (id, scopes, name, times,
status), never its secret nor the secret's hash; the token is in the answer that made
the key only (``paycore.api.shown_once``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from paycore.api.auth import Scope
from paycore.api.schemas import rfc3339
from paycore.storage.keys import ApiKeyRow

__all__ = [
    "MAX_GRACE_SECONDS",
    "ApiKeyIn",
    "ApiKeyOut",
    "ApiKeyPageOut",
    "NewApiKeyOut",
    "RotateApiKeyIn",
    "RotatedApiKeyOut",
    "api_key_out",
    "decode_key_cursor",
    "encode_key_cursor",
    "new_api_key_out",
]

# A rotation's grace and a key's lifetime are bounded, so that an old secret cannot be
# kept alive by mistake for years.
MAX_GRACE_SECONDS: Final = 30 * 86400
_MAX_LIFETIME_SECONDS: Final = 10 * 365 * 86400

KeyStatus = Literal["active", "revoked", "expired"]
KeyName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="What the key is for, 1-100 characters without control characters",
    ),
]


class _Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error."""


class _Output(msgspec.Struct, frozen=True):
    """Base of response bodies; every field is always present (null when unset)."""


class ApiKeyIn(_Input, frozen=True):
    """Body of ``POST /v1/api_keys``: the new key's scopes (``admin`` implies the
    others), an optional name, and an optional lifetime in seconds (else it never
    expires)."""

    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=3)]
    name: KeyName | None = None
    expires_in_seconds: Annotated[int, Meta(ge=1, le=_MAX_LIFETIME_SECONDS)] | None = None

    def __post_init__(self) -> None:
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("scopes must not repeat a scope")


class RotateApiKeyIn(_Input, frozen=True):
    """Body of ``POST /v1/api_keys/{id}/rotate`` (absent: ``{}``): how long the old key
    keeps working beside the new one (0, the default: it is refused at once)."""

    grace_seconds: Annotated[int, Meta(ge=0, le=MAX_GRACE_SECONDS)] = 0


class ApiKeyOut(_Output, frozen=True):
    """An API key, without its secret. ``revoked_at``: from when it is refused (in the
    future during a rotation's grace); ``replaced_by``: the key that rotated it."""

    id: str
    object: Literal["api_key"]
    tenant: str
    scopes: list[Scope]
    name: str | None
    status: KeyStatus
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    replaced_by: str | None


class NewApiKeyOut(ApiKeyOut, frozen=True):
    """A key just made. ``token`` (``Authorization: Bearer <token>``) is shown in this
    answer only; a replay under the same Idempotency-Key has it ``null``."""

    token: str | None


class RotatedApiKeyOut(NewApiKeyOut, frozen=True):
    """The new key of a rotation (its token shown once) and the old one, as it is now."""

    replaces: ApiKeyOut


class ApiKeyPageOut(_Output, frozen=True):
    """A page of the tenant's keys, oldest first; ``next_cursor`` is null on the last."""

    data: list[ApiKeyOut]
    next_cursor: str | None


def _status(row: ApiKeyRow, now: int) -> KeyStatus:
    if row.revoked_at is not None and row.revoked_at <= now:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def _time(ns: int | None) -> str | None:
    return None if ns is None else rfc3339(ns)


def api_key_out(row: ApiKeyRow, now: int) -> ApiKeyOut:
    """``row`` as the API shows it at ``now`` (ns, wall clock)."""
    return ApiKeyOut(
        id=row.id,
        object="api_key",
        tenant=row.tenant,
        scopes=sorted(Scope(s) for s in row.scopes.split(",")),
        name=row.name,
        status=_status(row, now),
        created_at=rfc3339(row.created_at),
        expires_at=_time(row.expires_at),
        revoked_at=_time(row.revoked_at),
        replaced_by=row.replaced_by,
    )


def new_api_key_out(row: ApiKeyRow, now: int, token: str | None) -> NewApiKeyOut:
    shown = api_key_out(row, now)
    return NewApiKeyOut(**msgspec.structs.asdict(shown), token=token)


def encode_key_cursor(row: ApiKeyRow) -> str:
    """Cursors are opaque to clients; this one names the last key of a page."""
    return f"{row.created_at}.{row.id}"


def decode_key_cursor(cursor: str) -> tuple[int, str] | None:
    """(created_at, id) of a cursor ``encode_key_cursor`` made; None for anything else."""
    created, sep, key_id = cursor.partition(".")
    valid = (
        sep == "."
        and 1 <= len(created) <= 19
        and created.isascii()
        and created.isdigit()
        and len(key_id) == 16
        and all(c in "0123456789abcdef" for c in key_id)
    )
    return (int(created), key_id) if valid else None
