"""A per-call timeout: the call is cancelled after ``seconds`` and ``CallTimeout`` raised.

Only the timeout this module set becomes ``CallTimeout``; a ``TimeoutError`` the call
raised by itself (a client library's own timeout) passes through unchanged. Whether a
timed-out call took effect is unknown, so this module does not classify it: the
caller does (``Policy(on_timeout=...)``, or by catching ``CallTimeout``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from paycore.resilience.errors import CallTimeout

__all__ = ["run_with_timeout"]

T = TypeVar("T")


async def run_with_timeout(fn: Callable[[], Awaitable[T]], seconds: float | None) -> T:
    """``await fn()``, cancelled after ``seconds`` (None: no limit) with ``CallTimeout``."""
    if seconds is None:
        return await fn()
    if not seconds > 0:
        raise ValueError(f"a timeout must be above 0 seconds, not {seconds!r}")
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await fn()
    except TimeoutError:
        if scope.expired():
            raise CallTimeout(seconds) from None
        raise
