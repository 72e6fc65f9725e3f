"""A process's resident memory from ``/proc`` (now and peak), sampled while a server runs."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["RssSampler", "read_rss", "rss_since"]


def read_rss(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process in MB, from ``/proc/<pid>/status``."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024  # kB -> MB
    return found


def rss_since(before: dict[str, float]) -> dict[str, float]:
    """This process's RSS in MB: ``before`` (a ``read_rss`` of it), now, and its peak."""
    rss = read_rss(os.getpid())
    return {
        "before_mb": before.get("VmRSS", 0.0),
        "rss_mb": rss.get("VmRSS", 0.0),
        "peak_mb": rss.get("VmHWM", 0.0),
    }


class RssSampler:
    """Polls a process's RSS in a thread; ``VmHWM`` gives the kernel's own peak too."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self.hwm = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = read_rss(self.pid)
        self.peak = max(self.peak, rss.get("VmRSS", 0.0))
        self.hwm = max(self.hwm, rss.get("VmHWM", 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
