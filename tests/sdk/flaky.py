"""Servers that fail on purpose, for the SDK's retry tests.

``Script`` answers each request with the next scripted step through an httpx
``MockTransport`` (sync and async clients alike). ``ResettingServer`` is a real TCP
server that cuts connections without answering (an RST, as a crashed node or a
proxy gives), then answers from its script: the client's own transport sees real
socket errors.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["RESET", "Answer", "ResettingServer", "Script", "Seen", "problem"]

RESET = "reset"  # a step: cut the connection without an answer


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    idempotency_key: str | None
    body: bytes


def problem(status: int, code: str, retry_after: str | None = None) -> Answer:
    """A paycore problem+json answer."""
    headers = {"content-type": "application/problem+json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {"type": f"https://paycore.dev/problems/{code}", "title": code,
            "status": status, "detail": f"scripted {code}", "code": code}  # fmt: skip
    return Answer(status, body, headers)


class Script:
    """Answers requests with ``steps`` in order (an ``Answer``, or an httpx exception to
    raise as the transport would); records what it received."""

    def __init__(self, *steps: Answer | type[httpx.TransportError]) -> None:
        self.steps = list(steps)
        self.seen: list[Seen] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        self.seen.append(Seen(request.method, request.url.path, key, request.read()))
        assert self.steps, f"unscripted request {request.method} {request.url}"
        step = self.steps.pop(0)
        if isinstance(step, Answer):
            return httpx.Response(step.status, json=step.body, headers=step.headers)
        raise step("scripted failure", request=request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


class ResettingServer:
    """A real HTTP/1.1 server on 127.0.0.1 that plays ``steps``: ``RESET`` closes the
    connection with an RST after reading the request; an ``Answer`` is sent, then the
    connection is closed."""

    def __init__(self, *steps: Answer | str) -> None:
        self.steps = list(steps)
        self.seen: list[Seen] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while self.steps:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += conn.recv(65536)
        self.seen.append(Seen(method, target.split("?")[0], headers.get("idempotency-key"), body))
        step = self.steps.pop(0)
        if step == RESET:
            # Linger 0: close() sends an RST, as a killed process's kernel does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        assert isinstance(step, Answer)
        payload = json.dumps(step.body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in step.headers.items())
        if "content-type" not in step.headers:
            extra += "content-type: application/json\r\n"
        conn.sendall(
            f"HTTP/1.1 {step.status} X\r\ncontent-length: {len(payload)}\r\n{extra}"
            f"connection: close\r\n\r\n".encode()
            + payload
        )

    @contextmanager
    def running(self) -> Iterator[ResettingServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._listener.close()
            self._thread.join(timeout=5)
