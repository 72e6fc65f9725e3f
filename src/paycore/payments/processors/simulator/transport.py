"""A simulator inside this process, behind the HTTP connector, without a web server.

The embedded default's acquirers (``sim-a``, ``sim-b``) run in the node's own process.
``SimulatorTransport`` is the httpx transport their ``SimulatorConnector`` uses: it
hands each request straight to a ``Simulator``, the same object ``paycore acquirer-sim``
serves, so the routes, behaviour, book, status codes and bodies are the simulator's
own, and the connector above runs exactly as against a remote one. Only the ASGI and
web-framework layers are skipped: through them (``httpx.ASGITransport`` into the
simulator's Litestar app) they cost about a seventh of a card payment's CPU.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

import httpx
import msgspec

from paycore.payments.processors.simulator.app import Simulator, answer_headers

__all__ = ["SimulatorTransport"]

_JSON: Final = {"Content-Type": "application/json"}
_ENCODER: Final = msgspec.json.Encoder()
# (method, path segments after /v1/authorizations/{reference}) -> endpoint
_ON_AUTHORIZATION: Final = {"captures": "capture", "void": "void", "refunds": "refund"}


class SimulatorTransport(httpx.AsyncBaseTransport):
    """Requests to the processor endpoints of ``simulator``, answered in process."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        found = _endpoint(request.method, request.url.raw_path.split(b"?", 1)[0])
        if found is None:
            body = {"processor": self.simulator.name, "error": "not_found", "message": "no route"}
            return httpx.Response(404, headers=_JSON, content=_ENCODER.encode(body))
        route, reference = found
        answer = await self.simulator.answer(route, await request.aread(), reference)
        headers = _JSON | answer_headers(answer)
        return httpx.Response(answer.status_code, headers=headers, content=answer.body)


def _endpoint(method: str, raw_path: bytes) -> tuple[str, str] | None:
    """The endpoint and reference a request names, as the simulator's app routes them."""
    parts = raw_path.decode("ascii", "replace").split("/")
    if len(parts) < 3 or parts[0] or parts[1] != "v1":
        return None
    match method, parts[2:]:
        case "POST", ["authorizations"]:
            return "authorize", ""
        case "POST", ["authorizations", reference, action] if action in _ON_AUTHORIZATION:
            return _ON_AUTHORIZATION[action], unquote(reference)
        case "POST", ["payouts"]:
            return "payout", ""
        case "GET", ["operations", reference]:
            return "status", unquote(reference)
    return None
