"""No full card number anywhere after a run: a real ``paycore serve`` (debug logging, its
background jobs on) over SQLite files or PostgreSQL databases takes card payments with
many test cards (approved, declined, processing errors, random Luhn-valid ones, invalid
ones, with and without Idempotency-Key, captures, refunds) through two simulated
acquirers, and sends its events to a real HTTP receiver. Then the databases (the SQLite
files with their journals, or a ``pg_dump`` of each PostgreSQL database), the server's
whole log output, this process's captured logs and every webhook request that arrived
(headers and body) are scanned for each number: none is found, nor any CVC field."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fix_postgres import PostgresServer
from paycore.locks.testing import free_port
from paycore.payments.cards import luhn_valid
from payments.fix_acquirer import AcquirerFactory

pytestmark = pytest.mark.slow

SECRET = "whsec_scan_0123456789abcdef"
APPROVED = ["4242424242424242", "5555555555554444", "378282246310005"]
DECLINED = ["4000000000009995", "4000000000000002", "4000000000009979"]
ERROR = ["4000000000000119"]
INVALID = ["4242424242424241", "1234567890123", "42424242424242424242"]  # Luhn, length


def _random_cards(n: int, rng: random.Random) -> list[str]:
    """``n`` Luhn-valid 16-digit visa numbers (the simulator approves unknown cards)."""
    cards: list[str] = []
    while len(cards) < n:
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        check = next(str(d) for d in range(10) if luhn_valid(body + str(d)))
        cards.append(body + check)
    return cards


class _Receiver(BaseHTTPRequestHandler):
    got: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.got.append(str(self.headers).encode() + b"\n" + body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server in a thread: every webhook request it got (headers + body)."""
    got: list[bytes] = []
    handler = type("Handler", (_Receiver,), {"got": got})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks", got
    server.shutdown()
    server.server_close()


def _toml(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value).lower()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_no_card_number_in_databases_logs_or_webhooks(
    backend: str,
    *,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    acquirer: AcquirerFactory,
    receiver: tuple[str, list[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After a run with many cards, no full card number and no CVC field is in the
    databases, the server's log, this process's logs or any webhook request."""
    caplog.set_level(logging.DEBUG)
    hook_url, delivered = receiver
    acq_a, acq_b = acquirer("acq-a"), acquirer("acq-b")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server: PostgresServer | None = None
    dsns: list[str] = []
    lines = [f"data_dir = {_toml(str(data_dir))}", "payment_worker_interval_seconds = 0.2"]
    for n in range(2):
        lines += ["[[shards]]", f'name = "s{n}"']
        if backend == "postgres":
            server = request.getfixturevalue("postgres_server")
            assert server is not None
            dsns.append(server.ledger_database())
            lines += ['backend = "postgres"', f"dsn = {_toml(dsns[-1])}"]
        else:
            lines += ['backend = "sqlite"', f"path = {_toml(str(data_dir / f's{n}.sqlite3'))}"]
    for name, url in (("acq-a", acq_a.url), ("acq-b", acq_b.url)):
        lines += ["[[processors]]", f'name = "{name}"', f"url = {_toml(url)}",
                  f'webhook_secret = "{SECRET}"']  # fmt: skip
    lines += ["[[webhooks]]", f"url = {_toml(hook_url)}", f'secrets = ["{SECRET}"]']
    config = tmp_path / "paycore.toml"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)

    rng = random.Random(8)
    good = APPROVED + _random_cards(25, rng)
    every = good + DECLINED + ERROR + INVALID
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "paycore.cli", "serve", "--config", str(config),
             "--port", str(port), "--log-level", "debug", "--open"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=20) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert serve.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "paycore serve did not start"
                time.sleep(0.1)
            for account in ("shop", "shop2"):
                r = client.post("/v1/accounts", json={"id": account, "currency": "USD"})
                assert r.status_code == 201, r.text
            statuses: dict[str, int] = {}
            for i, number in enumerate(every):
                manual = i % 3 == 0
                body = {"amount": 1000 + i, "currency": "USD",
                        "merchant_account_id": "shop" if i % 2 else "shop2",
                        "capture": "manual" if manual else "automatic",
                        "source": {"card": {"number": number, "exp_month": 12,
                                            "exp_year": 2040, "cvc": "987"}}}  # fmt: skip
                headers = {"Idempotency-Key": f"scan-{i}"} if i % 2 else {}
                r = client.post("/v1/payments", json=body, headers=headers)
                statuses[number] = r.status_code
                assert r.status_code < 500 or r.status_code == 503, r.text
                assert number not in r.text
                if r.status_code != 201:
                    continue
                payment = r.json()
                if payment["status"] == "requires_capture":
                    r = client.post(f"/v1/payments/{payment['id']}/capture", json={"amount": 500})
                    assert r.status_code in (200, 201), r.text
                if payment["status"] in ("succeeded", "requires_capture") and i % 4 == 1:
                    r = client.post(
                        "/v1/refunds", json={"payment_id": payment["id"], "amount": 100}
                    )
                    assert r.status_code in (200, 201), r.text
            # An expired card and a bad CVC are refused before anything is kept.
            for card in (
                {"number": APPROVED[0], "exp_month": 1, "exp_year": 2001, "cvc": "987"},
                {"number": APPROVED[1], "exp_month": 1, "exp_year": 2040, "cvc": "98x"},
            ):
                refused = {"amount": 5, "currency": "USD", "merchant_account_id": "shop",
                           "source": {"card": card}}  # fmt: skip
                r = client.post("/v1/payments", json=refused)
                assert r.status_code == 422, r.text
            assert sum(1 for s in statuses.values() if s == 201) >= len(good)
            assert all(statuses[n] == 422 for n in INVALID)
            # Every event reaches the receiver: wait until none is left to send, and the
            # first payment's (the positive control below) has arrived, however loaded
            # the machine is.
            deadline = time.monotonic() + 90
            last, stable_since = -1, time.monotonic()
            while time.monotonic() - stable_since < 2.0 or not any(
                b"4242" in request_bytes for request_bytes in list(delivered)
            ):
                if len(delivered) != last:
                    last, stable_since = len(delivered), time.monotonic()
                assert time.monotonic() < deadline, f"webhooks still coming: {len(delivered)}"
                time.sleep(0.1)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()

    assert len(delivered) >= len(good), "the run sent too few webhooks to prove anything"
    places: dict[str, bytes] = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            places[f"database file {path.name}"] = path.read_bytes()
    for dsn in dsns:
        assert server is not None
        dump = subprocess.run(
            [str(server.bindir / "pg_dump"), "--data-only", "--inserts", "--dbname", dsn],
            capture_output=True, check=True,
        )  # fmt: skip
        places[f"pg_dump {dsn.rsplit('=', 1)[-1]}"] = dump.stdout
        assert b"INSERT INTO" in dump.stdout
    places["paycore serve log"] = log_path.read_bytes()
    places["captured logs"] = caplog.text.encode()
    for n, request_bytes in enumerate(delivered):
        places[f"webhook request {n}"] = request_bytes
    assert places["paycore serve log"], "the server logged nothing: the scan proves nothing"
    found = [
        f"{where}: ****{number[-4:]}"
        for where, data in places.items()
        for number in every
        if number.encode() in data
    ]
    assert found == []
    cvc = [where for where, data in places.items() if b'"cvc"' in data.lower()]
    assert cvc == []
    # What is kept instead: brand and last four digits (a positive control of the scan).
    assert any(b"4242" in data for where, data in places.items() if where.startswith("webhook"))
    if server is not None:
        for dsn in dsns:
            server.release_ledger_database(dsn)
