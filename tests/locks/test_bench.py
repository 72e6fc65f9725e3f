"""The lock benchmark runs (a smoke test of the tool, not a performance assertion)."""

from __future__ import annotations

import pytest

from paycore.locks.bench import main
from paycore.locks.testing import RedisServer


@pytest.mark.parametrize("target", ["redis", "local"])
def test_bench_prints_both_scenarios(
    target: str, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m paycore.locks.bench`` prints how to reproduce it and a rate per scenario."""
    url = redis_server.url if target == "redis" else "local"
    assert main(["--url", url, "--seconds", "0.1", "--tasks", "4"]) == 0
    out = capsys.readouterr().out
    assert "reproduce: " in out
    assert "sequential  tasks=1" in out
    assert "concurrent  tasks=4" in out
    assert "cycles/s" in out
