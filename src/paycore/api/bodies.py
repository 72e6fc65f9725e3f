"""What every request body goes through before it is decoded.

- **Media type.** A body must be JSON: ``Content-Type: application/json`` (parameters
  such as ``charset=utf-8`` are allowed and ignored: JSON is UTF-8) or any
  ``application/*+json``. Any other type, or a body without a Content-Type, is 415
  ``unsupported_media_type``; it is never read as JSON by guesswork. An empty body needs
  no type (``POST /v1/transfers/{id}/void`` may have none).
- **Nesting.** No body nests arrays and objects deeper than ``MAX_BODY_DEPTH`` levels:
  422 ``invalid_request``, measured before decoding (``json_depth``, linear, not
  recursive). JSON decoders and encoders recurse once per level, so a deeper body could
  overflow the stack in the decoder, in the Idempotency-Key's fingerprint, or worse in
  the rendering of the answer after its effect was committed.
- **A client that leaves mid-body** is not an error of ours: ``ClientDisconnected``,
  answered (to no one) with 499, the status proxies log for it, and no traceback.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request
from litestar.exceptions import InternalServerException

from paycore.errors import ErrorCode, RequestError
from paycore.storage.codec import json_depth

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "MAX_BODY_DEPTH",
    "ClientDisconnected",
    "check_depth",
    "is_json_media_type",
    "read_body",
    "read_json_body",
    "require_json_type",
]

MAX_BODY_DEPTH: Final = 32
"""Levels of arrays and objects a request body may nest (metadata: ``schemas``)."""

CLIENT_CLOSED_REQUEST: Final = 499
"""The status a request gets when its client left before sending all of its body
(nginx's convention; it reaches no one, but the metrics and the logs say what it was)."""


class ClientDisconnected(Exception):
    """The client closed the connection before its request body was read in full."""


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, any parameters, any case."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and subtype.endswith("+json") and len(subtype) > len("+json")


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    """The request's body: 413 ``request_too_large`` past the app's limit (Litestar's,
    while reading); ``ClientDisconnected`` when the client leaves before its end."""
    try:
        return await request.body()
    except InternalServerException as exc:
        # The only server error Litestar raises while reading a body is the client's
        # "http.disconnect" before the last chunk ("client disconnected prematurely").
        raise ClientDisconnected(str(exc.detail)) from None


def require_json_type(request: Request[Any, Any, Any], body: bytes) -> None:
    """415 ``unsupported_media_type`` unless ``body`` is empty or said to be JSON."""
    if not body:
        return
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        said = "no Content-Type" if not content_type else f"Content-Type {content_type[:100]!r}"
        raise RequestError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be JSON (Content-Type: application/json), not {said}",
        )


async def read_json_body(request: Request[Any, Any, Any]) -> bytes:
    """The request's body, if it is JSON by its media type (empty is allowed: b"");
    ``read_body`` then ``require_json_type``."""
    body = await read_body(request)
    require_json_type(request, body)
    return body


def check_depth(body: bytes) -> None:
    """422 ``invalid_request`` when ``body`` nests deeper than ``MAX_BODY_DEPTH``."""
    if json_depth(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"the body nests arrays and objects deeper than {MAX_BODY_DEPTH} levels",
        )
