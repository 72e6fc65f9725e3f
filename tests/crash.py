"""The crash tests' harness: run a child process that acknowledges work line by line, and
SIGKILL it at a chosen moment.

The child prints ``ready`` once it runs, then ``ack <id>`` for each item it has had
acknowledged (made durable); anything else on its stdout fails the test.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO

import pytest

__all__ = ["run_and_kill"]


def _lines(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line.rstrip("\n"))
    sink.put(None)


def run_and_kill(
    argv: Sequence[str], *, acks: int | None, settle: float, timeout: float
) -> tuple[set[str], str]:
    """Start ``argv`` and SIGKILL it ``settle`` seconds after it acknowledged ``acks``
    items (with ``acks`` None: ``settle`` seconds after it started, whatever it printed).
    Returns the ids it acknowledged, with what it wrote to stderr; a child that
    dies on its own first fails the test. ``timeout``: the longest wait for a line."""
    lines: queue.Queue[str | None] = queue.Queue()
    acked: set[str] = set()

    def take(line: str) -> None:
        if line.startswith("ack "):
            acked.add(line.split()[1])
        else:
            assert line == "ready", line

    with subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        reader = threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            while acks is not None and len(acked) < acks:
                line = lines.get(timeout=timeout)
                if line is None:
                    proc.wait(timeout=timeout)
                    pytest.fail(f"the child died on its own: {proc.stderr.read()}")
                take(line)
            time.sleep(settle)
        finally:
            proc.kill()  # SIGKILL: no cleanup, no flush, no atexit
            proc.wait(timeout=timeout)
            reader.join(timeout=timeout)
        stderr = proc.stderr.read()
    while (line := lines.get_nowait()) is not None:
        take(line)  # printed before the kill: acknowledged as well
    return acked, stderr
