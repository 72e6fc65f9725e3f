"""The simulator's HTTP face (Litestar on uvicorn) and its runner.

Each processor endpoint goes through the same steps: read the body; if the simulator
is down, answer 503 at once (or hang first, ``outage_mode = "hang"``); wait the
sampled latency; draw an injected fault (503, or a hang with or without the operation
done); then let the ``AcquirerBook`` answer, and hang after it for the timeout test
card. Handlers are closures over one ``Simulator``; no request data is logged but the
answer bodies, which hold at most a card's last four digits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, Final

import msgspec
from litestar import Litestar, Request, Response, get, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from paycore.payments.processors.simulator.book import AcquirerBook, Answer
from paycore.payments.processors.simulator.config import Behaviour, Fault, SimulatorConfig
from paycore.payments.processors.simulator.settlement import (
    SettlementAnomalies,
    settlement_report,
)

__all__ = ["Simulator", "answer_headers", "create_app", "serve"]

log = logging.getLogger("paycore.acquirer_sim")

_JSON: Final = "application/json"
_ENCODER: Final = msgspec.json.Encoder()


class Simulator:
    """One simulated acquirer: its books, its behaviour and its counters."""

    def __init__(self, name: str, config: SimulatorConfig, *, seed: int | None = None) -> None:
        self.name = name
        self.book = AcquirerBook(name)
        self.behaviour = Behaviour(config, seed=seed)
        self.requests: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.in_flight = 0

    def stats(self) -> dict[str, Any]:
        return {
            "processor": self.name,
            "requests": dict(self.requests),
            "answers": dict(self.answers),
            "faults": dict(self.faults),
            "records": len(self.book),
            "in_flight": self.in_flight,
        }

    def settlement(self, day: date, anomalies: SettlementAnomalies) -> str:
        """The settlement report of ``day`` as CSV (see ``settlement.settlement_report``)."""
        yesterday = self.book.settled(day - timedelta(days=1))
        return settlement_report(self.name, day, self.book.settled(day), yesterday, anomalies).text

    def reset(self) -> None:
        self.book.clear()
        self.requests.clear()
        self.answers.clear()
        self.faults.clear()

    def operation(self, route: str, reference: str = "") -> Callable[[bytes], Answer]:
        """What the book does for ``route`` (a processor endpoint) on the request body."""
        book = self.book
        if route == "authorize":
            return lambda raw: book.authorize(raw, self.behaviour.config.selective_card)
        if route == "capture":
            return lambda raw: book.capture(reference, raw)
        if route == "void":
            return lambda _: book.void(reference)
        if route == "refund":
            return lambda raw: book.refund(reference, raw)
        if route == "payout":
            return book.payout
        if route == "status":
            return lambda _: book.status(reference)
        raise ValueError(f"no processor endpoint {route!r}")

    async def answer(self, route: str, raw: bytes, reference: str = "") -> Answer:
        """Serve one request to a processor endpoint, counted (see the module docstring)."""
        self.requests[route] += 1
        self.in_flight += 1
        try:
            answer = await self._handle(route, raw, self.operation(route, reference))
        finally:
            self.in_flight -= 1
        self.answers[str(answer.status_code)] += 1
        return answer

    async def handle(
        self, route: str, request: Request[Any, Any, Any], reference: str = ""
    ) -> Response[bytes]:
        answer = await self.answer(route, await request.body(), reference)
        return Response(
            answer.body,
            status_code=answer.status_code,
            media_type=_JSON,
            headers=answer_headers(answer),
        )

    async def _handle(self, route: str, raw: bytes, operation: Callable[[bytes], Answer]) -> Answer:
        behaviour = self.behaviour
        config = behaviour.config
        if behaviour.is_down():
            self.faults["down"] += 1
            if config.outage_mode == "hang":
                await asyncio.sleep(config.hang_seconds)
            return self._error(503, "service_unavailable", "the acquirer is down")
        delay = behaviour.latency_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        fault = behaviour.draw()
        if fault is not Fault.NONE:
            self.faults[fault.value] += 1
        if fault is Fault.ERROR:
            return self._error(503, "service_unavailable", "injected error; nothing was done")
        if fault is Fault.TIMEOUT_LOST:
            await asyncio.sleep(config.hang_seconds)
            return self._error(504, "timeout", "injected timeout; nothing was done")
        answer = operation(raw)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %d %s", self.name, route, answer.status_code, answer.body.decode())
        if answer.hang or fault is Fault.TIMEOUT_DONE:
            await asyncio.sleep(config.hang_seconds)
        return answer

    def _error(self, status: int, code: str, message: str) -> Answer:
        body = {"processor": self.name, "error": code, "message": message}
        return Answer(status, _ENCODER.encode(body))


def answer_headers(answer: Answer) -> dict[str, str]:
    """A 503 closes the connection and says when to come back."""
    return {"Connection": "close", "Retry-After": "1"} if answer.status_code == 503 else {}


def create_app(name: str, config: SimulatorConfig, *, seed: int | None = None) -> Litestar:
    """The simulator ``name`` as an ASGI app (endpoints: see the package docstring)."""
    sim = Simulator(name, config, seed=seed)

    @post("/v1/authorizations", status_code=200)
    async def authorize(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("authorize", request)

    @post("/v1/authorizations/{reference:str}/captures", status_code=200)
    async def capture(reference: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("capture", request, reference)

    @post("/v1/authorizations/{reference:str}/void", status_code=200)
    async def void(reference: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("void", request, reference)

    @post("/v1/authorizations/{reference:str}/refunds", status_code=200)
    async def refund(reference: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("refund", request, reference)

    @post("/v1/payouts", status_code=200)
    async def payout(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("payout", request)

    @get("/v1/operations/{reference:str}")
    async def status(reference: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
        return await sim.handle("status", request, reference)

    @get("/admin/config")
    async def get_config() -> Response[bytes]:
        return Response(_ENCODER.encode(sim.behaviour.current()), media_type=_JSON)

    @put("/admin/config", status_code=200)
    async def put_config(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            changes = msgspec.json.decode(await request.body(), type=dict[str, Any])
            current = sim.behaviour.update(changes)
        except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
            body = {"processor": name, "error": "invalid_config", "message": str(exc)}
            return Response(_ENCODER.encode(body), status_code=422, media_type=_JSON)
        log.info("%s config: %s", name, _ENCODER.encode(current).decode())
        return Response(_ENCODER.encode(current), media_type=_JSON)

    @get("/admin/stats")
    async def stats() -> Response[bytes]:
        return Response(_ENCODER.encode(sim.stats()), media_type=_JSON)

    @post("/admin/reset", status_code=200)
    async def reset() -> Response[bytes]:
        sim.reset()
        log.info("%s: records and counters cleared", name)
        return Response(_ENCODER.encode(sim.stats()), media_type=_JSON)

    @get("/reports/settlement")
    async def settlement(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The day's settlement report (CSV); query: ``date=YYYY-MM-DD`` and any field
        of ``SettlementAnomalies`` (``seed``, ``missing``, ``duplicate``...)."""
        query = dict(request.query_params)
        try:
            day = date.fromisoformat(query.pop("date", ""))
            anomalies = msgspec.convert(query, SettlementAnomalies, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            body = {"processor": name, "error": "invalid_request", "message": str(exc)}
            return Response(_ENCODER.encode(body), status_code=400, media_type=_JSON)
        text = sim.settlement(day, anomalies)
        return Response(text.encode(), media_type="text/csv; charset=utf-8")

    @get("/healthz")
    async def healthz() -> Response[bytes]:
        body = {"processor": name, "status": "ok", "down": sim.behaviour.is_down()}
        return Response(_ENCODER.encode(body), media_type=_JSON)

    handlers: list[HTTPRouteHandler] = [
        authorize,
        capture,
        void,
        refund,
        payout,
        status,
        get_config,
        put_config,
        stats,
        reset,
        settlement,
        healthz,
    ]
    app = Litestar(route_handlers=handlers, openapi_config=None, logging_config=None)
    app.state.simulator = sim
    return app


def serve(
    name: str,
    config: SimulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    log_level: str = "info",
) -> int:
    """Serve the simulator until SIGINT/SIGTERM; print its URL on stdout once listening.

    The socket is bound here, before uvicorn starts, so ``port=0`` works: the line
    ``paycore acquirer-sim NAME listening on http://HOST:PORT`` gives the real port.
    """
    import uvicorn  # noqa: PLC0415 - only the server needs it

    app = create_app(name, config, seed=seed)
    sock = socket.create_server((host, port), backlog=4096)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level=log_level.lower(),
            timeout_keep_alive=75,  # longer than a client's idle keep-alive (httpx: 5 s)
            timeout_graceful_shutdown=1,  # hanging answers must not hold the exit
        )
    )
    log.info("%s config: %s", name, _ENCODER.encode(config).decode())
    sys.stdout.write(f"paycore acquirer-sim {name} listening on http://{host}:{bound}\n")
    sys.stdout.flush()
    server.run(sockets=[sock])
    return 0
