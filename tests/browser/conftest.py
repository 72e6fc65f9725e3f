"""Headless Chromium and a real ``paycore serve`` for checking ``/docs`` in a browser.

Chromium comes from ``paycore.tools.browser.install_chromium`` (Debian's packages
unpacked into the tools directory, as the HA tests fetch nginx and etcd), run here
explicitly because the suite must fetch what it needs on a fresh machine.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from paycore.tools.browser import Chromium, install_chromium
from sdk.support import free_port, paycore_command, wait_until_up

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Where the browser tests leave what a reader of a CI run looks at (git-ignored)."""


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    return install_chromium(say=lambda m: print(f"[chromium] {m}"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``paycore serve`` as a user runs it (API keys required; /docs needs none); its URL."""
    root = tmp_path_factory.mktemp("docs-serve")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PAYCORE_EMBEDDED_SHARDS": "1"}
    port = free_port()
    log = root / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            paycore_command("serve", "--data-dir", str(root / "data"), "--port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_up(base_url, serve, log)
        yield base_url
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
