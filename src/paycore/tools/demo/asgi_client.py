"""An in-process HTTP client for the demo's acts: the real API, called through ASGI."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from paycore.tools.loadgen import HttpResponse

__all__ = ["DEMO_TENANT", "AsgiClient", "Json", "json_of"]

Json = dict[str, Any]
_decode = msgspec.json.Decoder(Json)


def json_of(response: HttpResponse) -> Json:
    """The response's JSON object; {} for an empty body or one that is not JSON."""
    try:
        return _decode.decode(response.body) if response.body else {}
    except msgspec.DecodeError:
        return {}


# The tenant of the demo's API key (its accounts, transfers and payments).
DEMO_TENANT = "demo"


class AsgiClient:
    """Calls an ASGI app in-process: HTTP/1.1 semantics without a socket.

    ``async with AsgiClient(app)`` runs the app's lifespan (startup on enter, shutdown
    on exit), as a server would.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        # Sent with every request (the demo's API key: ``use_key``).
        self.default_headers: dict[str, str] = {}
        self._to_app: asyncio.Queue[Json] = asyncio.Queue()
        self._from_app: asyncio.Queue[Json] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsgiClient:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._lifespan_step("startup")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._lifespan_step("shutdown")
        if self._lifespan is not None:
            await self._lifespan

    async def use_key(self, store: Any, tenant: str = DEMO_TENANT) -> None:
        """Create an API key for ``tenant`` (read, write) and send it from now on: the
        demo goes through authentication like any client."""
        from paycore.api.auth import ApiKeys, Scope  # noqa: PLC0415

        key = await ApiKeys(store).create(tenant, frozenset({Scope.READ, Scope.WRITE}))
        self.default_headers["Authorization"] = f"Bearer {key.token}"

    async def _lifespan_step(self, step: str) -> None:
        await self._to_app.put({"type": f"lifespan.{step}"})
        reply = await self._from_app.get()
        if reply["type"] != f"lifespan.{step}.complete":
            raise RuntimeError(f"app {step} failed: {reply.get('message', reply)}")

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        path, _, query = path.partition("?")
        raw_headers = [(b"host", b"paycore-demo")]
        if body is not None:
            raw_headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        sent = {**self.default_headers, **(headers or {})}
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in sent.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("paycore-demo", 80),
            "state": {},
        }
        done = asyncio.Event()
        sent_body = False
        status = 500
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> Json:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Json) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    response_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        finally:
            done.set()
        return HttpResponse(status, response_headers, b"".join(chunks))
