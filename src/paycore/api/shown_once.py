"""Answers that carry a secret shown once: a new API key's token, a webhook endpoint's
signing secret.

The secret is in the answer given to the request that made it, and nowhere else: under
an Idempotency-Key the stored answer (replayed to a retry) is rendered without it, so
the idempotency table never holds a secret in clear. A client that lost the first
answer gets the object again with its secret ``null``; it revokes (or rotates) it and
makes another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response

from paycore.api.idempotency import WriteExecutor, stored_to_response
from paycore.storage.base import StoredResponse
from paycore.storage.store import Command

__all__ = ["RenderWithSecret", "run_shown_once"]

RenderWithSecret = Callable[[Any, str | None], StoredResponse]
"""Turns a command's result into the answer, with the secret (or None: without it)."""


async def run_shown_once(
    writes: WriteExecutor,
    request: Request[Any, Any, Any],
    command: Command,
    body: msgspec.Struct,
    *,
    render: RenderWithSecret,
    secret: str,
) -> Response[bytes]:
    """Run ``command`` like ``WriteExecutor.run``; a successful first answer carries
    ``secret``, a stored or replayed one does not."""
    results: list[Any] = []

    def without_secret(result: Any) -> StoredResponse:
        results.append(result)  # the writer may render more than once (a retried commit)
        return render(result, None)

    stored, replayed = await writes.execute(request, command, without_secret, body)
    if not replayed and results and 200 <= stored.status < 300:
        stored = render(results[-1], secret)
    return stored_to_response(stored, replayed=replayed)
