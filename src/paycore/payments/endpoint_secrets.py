"""The signing secrets of webhook endpoints made over HTTP, derived, never stored.

An endpoint's secret is ``whsec_`` and the URL-safe base64 of
HMAC-SHA256(signing key, ``<endpoint id>:<version>``): the database keeps the endpoint's
id and its secret's version only, so neither a copy of the database nor its backups
hold a secret. Rotating a secret is a new version; the previous one keeps signing
beside it (a second ``v1`` in ``Paycore-Signature``) until its grace ends.

The signing key is ``Settings.webhook_signing_key`` (every node of a cluster needs the
same one); without it, the file ``webhook-signing-key`` in the data directory, made
with 32 random bytes, readable by its owner only, on first use. Changing the key
changes every such endpoint's secret: rotate them (the receivers must be told) rather
than change it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from paycore.config import Settings

__all__ = ["KEY_FILE_NAME", "endpoint_secret", "signing_key"]

KEY_FILE_NAME: Final = "webhook-signing-key"


def signing_key(settings: Settings) -> bytes:
    """The key endpoint secrets are derived from (see the module docstring)."""
    if settings.webhook_signing_key is not None:
        return settings.webhook_signing_key.encode()
    path = Path(settings.data_dir) / KEY_FILE_NAME
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    # Written whole under a private name, then linked into place: a process that starts
    # at the same moment finds either no file or the complete key, never an empty one,
    # and the first link wins (link fails if the name exists).
    draft = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        os.link(draft, path)
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        draft.unlink(missing_ok=True)
    return key


def endpoint_secret(key: bytes, endpoint_id: str, version: int) -> str:
    """The secret of version ``version`` of endpoint ``endpoint_id``'s."""
    digest = hmac.new(key, f"{endpoint_id}:{version}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
