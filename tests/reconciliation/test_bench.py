"""The reconciliation benchmark runs end to end on a small report (it prints numbers;
this only keeps it from rotting)."""

from __future__ import annotations

import pytest

from paycore.tools.bench.reconcile import main


def test_the_benchmark_prints_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    """Each stage prints its time and peak memory, and the matching summary."""
    assert main(["--lines", "300", "--anomalies", "0.05", "--store"]) == 0
    out = capsys.readouterr().out
    for stage in ("corpus", "render", "parse", "match", "book", "record"):
        assert f"\n{stage} " in out, stage
    assert "peak RSS" in out
    assert "matched" in out
