"""The OpenAPI document is enough to generate a working client (issue 18): a client made
by openapi-python-client from the live server's ``/docs/openapi.json``, with no warning,
authenticates with the Bearer key, sends an Idempotency-Key, moves money, and reads a
refusal back as a typed problem with its code."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdk.support import LiveServer

PACKAGE = "paycore_generated"


@pytest.fixture
def generated(live_server: LiveServer, tmp_path: Path) -> Iterator[Any]:
    """The generated package, imported from ``tmp_path`` (and forgotten afterwards)."""
    document = httpx.get(f"{live_server.base_url}/docs/openapi.json", timeout=10)
    assert document.status_code == 200
    spec = tmp_path / "openapi.json"
    spec.write_bytes(document.content)
    # The generator formats its output with ruff, found on PATH (the venv's own).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
         "--meta", "none", "--output-path", str(tmp_path / PACKAGE)],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Warning" not in output, output
    assert "Error" not in output, output
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_a_generated_client_moves_money_and_reads_problems(
    generated: Any, live_server: LiveServer, uid: str
) -> None:
    client_module = importlib.import_module(f"{PACKAGE}.client")
    create_account = importlib.import_module(f"{PACKAGE}.api.accounts.v1_accounts_create_account")
    read_account = importlib.import_module(
        f"{PACKAGE}.api.accounts.v1_accounts_account_id_read_account"
    )
    create_transfer = importlib.import_module(
        f"{PACKAGE}.api.transfers.v1_transfers_create_transfer"
    )
    models = importlib.import_module(f"{PACKAGE}.models")
    client = client_module.AuthenticatedClient(
        base_url=live_server.base_url, token=live_server.write_key
    )
    with client:
        for name in ("bank", "wallet"):
            made = create_account.sync_detailed(
                client=client,
                body=models.AccountIn(id=f"{uid}-{name}", currency="EUR"),
                idempotency_key=f"{uid}-open-{name}",
            )
            assert made.status_code == 201, made.content
            assert isinstance(made.parsed, models.AccountOut)
        body = models.TransferIn(
            id=f"{uid}-t1", debit_account_id=f"{uid}-bank", credit_account_id=f"{uid}-wallet",
            amount=1234, currency="EUR",
        )  # fmt: skip
        sent = create_transfer.sync_detailed(client=client, body=body, idempotency_key=f"{uid}-k")
        assert sent.status_code == 201, sent.content
        again = create_transfer.sync_detailed(client=client, body=body, idempotency_key=f"{uid}-k")
        assert again.headers["idempotent-replayed"] == "true"
        wallet = read_account.sync(f"{uid}-wallet", client=client)
        assert wallet.balance.credits_posted == 1234
        missing = read_account.sync(f"{uid}-nobody", client=client)
        assert isinstance(missing, models.Problem)
        assert (missing.status, str(missing.code.value)) == (404, "account_not_found")
    anonymous = client_module.Client(base_url=live_server.base_url)
    with anonymous:
        refused = read_account.sync_detailed(f"{uid}-wallet", client=anonymous)
        assert refused.status_code == 401
