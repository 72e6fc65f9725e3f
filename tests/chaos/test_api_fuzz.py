"""Schemathesis against a running ``paycore serve``: no 5xx, every answer conforms to the
OpenAPI document, and the ledger audits clean afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from paycore.locks.testing import free_port

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance"
)


def test_schemathesis_finds_nothing_and_audit_is_clean(tmp_path: Path) -> None:
    """Coverage, fuzzing and stateful phases over every operation; then ``paycore audit``."""
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.skip("schemathesis is not installed (the chaos extra)")
    port = free_port()
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paycore.cli",
            "serve",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "paycore serve did not start"
            time.sleep(0.1)
        examples = "300" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "25"
        run = subprocess.run(
            [
                str(st),
                "run",
                f"{url}/docs/openapi.json",
                "-c",
                CHECKS,
                "-n",
                examples,
                "-w",
                "1",
                "--phases",
                "coverage,fuzzing,stateful",
                "--seed",
                "1",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
    audit = subprocess.run(
        [sys.executable, "-m", "paycore.cli", "audit", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout[-4000:]
