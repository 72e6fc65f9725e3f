"""The writer's dispatch: every command a store accepts has the function that applies it."""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

import pytest

from paycore.storage import apply
from paycore.storage.base import PurgeIdempotency
from paycore.storage.store import Command
from paycore.storage.tx import GroupClock


def _members(union: Any) -> set[type]:
    if get_origin(union) in (Union, UnionType):
        return {t for arg in get_args(union) for t in _members(arg)}
    return {union}


def test_every_command_has_exactly_one_way_to_be_applied() -> None:
    """Each member of ``Command`` is in the handler table or applied by the group itself
    (transfer runs, fencing), never both and never neither."""
    commands = _members(Command)
    registered = set(apply._HANDLERS)
    elsewhere = set(apply.HANDLED_ELSEWHERE)
    assert len(commands) > 20  # the union was read, not one opaque alias
    assert commands - registered - elsewhere == set()
    assert registered & elsewhere == set()
    assert registered - commands == set(), "a handler for a command no store accepts"


def test_an_unknown_command_is_refused_by_name() -> None:
    """Something that is not a command is a programming error, named in the message."""

    class NotACommand:
        pass

    with pytest.raises(TypeError, match="unknown command"):
        apply._apply_other(None, GroupClock(0, 0), NotACommand())  # type: ignore[arg-type]


def test_a_handler_gets_the_command_it_is_registered_for() -> None:
    """The table dispatches on the command's own type (here: the idempotency purge reads
    its limit and the group's time)."""
    seen: list[tuple[int, int]] = []

    class Tx:
        def purge_idempotency(self, now: int, limit: int) -> int:
            seen.append((now, limit))
            return 3

    assert apply._apply_other(Tx(), GroupClock(7, 0), PurgeIdempotency(limit=5)) == 3  # type: ignore[arg-type]
    assert seen == [(7, 5)]
