"""Starting a real ``paycore serve`` for the SDK's tests (see ``conftest.live_server``)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from paycore.locks.testing import free_port

__all__ = ["SHARDS", "LiveServer", "create_key", "free_port", "paycore_command", "wait_until_up"]

SHARDS = "4"  # holds, batches and lists then cross shards
_START_SECONDS = 30


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    write_key: str  # tenant "acme", scopes read and write
    read_key: str  # tenant "acme", scope read only
    log: Path
    admin_key: str  # tenant "acme", scope admin (the admin API)
    operator_key: str  # tenant "default", scope admin (the operator's: reconciliation)


def paycore_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "paycore.cli", *args]


def create_key(data_dir: Path, env: dict[str, str], scopes: str, tenant: str = "acme") -> str:
    out = subprocess.run(
        paycore_command("keys", "create", "--data-dir", str(data_dir), "--tenant", tenant,
                 "--scopes", scopes),
        env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    # The key is printed alone on its line, once.
    return next(line.strip() for line in out.splitlines() if line.startswith("pk_live_"))


def wait_until_up(base_url: str, serve: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert serve.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "paycore serve did not start:\n" + log.read_text()
            time.sleep(0.1)
