"""A real ``paycore serve`` for the SDK's tests: one process for the session, on a free
port over a fresh data directory of four embedded shards, with API keys made by
``paycore keys create``."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from sdk.support import SHARDS, LiveServer, create_key, free_port, paycore_command, wait_until_up


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``paycore serve`` with API keys required, as a user runs it."""
    root = tmp_path_factory.mktemp("sdk-serve")
    data_dir = root / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PAYCORE_EMBEDDED_SHARDS": SHARDS}
    write_key = create_key(data_dir, env, "read,write")
    read_key = create_key(data_dir, env, "read")
    admin_key = create_key(data_dir, env, "admin")
    operator_key = create_key(data_dir, env, "admin", tenant="default")
    port = free_port()
    log = root / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            paycore_command("serve", "--data-dir", str(data_dir), "--port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_up(base_url, serve, log)
        yield LiveServer(base_url, write_key, read_key, log, admin_key, operator_key)
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


@pytest.fixture
def uid() -> str:
    """A prefix that keeps each test's ids apart on the shared server."""
    return "t" + uuid.uuid4().hex[:10]
