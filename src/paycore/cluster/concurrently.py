"""Awaiting several shards at once, cheaply when there is only one.

Most requests touch one shard per step; ``asyncio.gather`` would still make, schedule
and collect a task for it, and on the event loop of an API node that bookkeeping was a
large share of a cross-shard transfer's Python work. A lone awaitable is awaited in
place: the same outcome, no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["gather_all", "gather_outcomes"]

T = TypeVar("T")


async def gather_outcomes(aws: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    """Run concurrently; each outcome, a result or the exception it raised (as
    ``asyncio.gather(..., return_exceptions=True)``)."""
    awaitables = list(aws)
    if len(awaitables) == 1:
        try:
            return [await awaitables[0]]
        except Exception as exc:  # noqa: BLE001 - returned, as gather returns it
            return [exc]
    return list(await asyncio.gather(*awaitables, return_exceptions=True))


async def gather_all(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; every outcome is retrieved, then the first error is raised."""
    awaitables = list(aws)
    if len(awaitables) == 1:
        return [await awaitables[0]]
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]
