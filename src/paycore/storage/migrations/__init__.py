"""Versioned schema migrations, one folder per dialect (``sqlite``, ``postgres``).

Both folders hold the same versions, so every shard of a mixed topology reports the
same schema; a version that needs nothing on one dialect is a file of comments there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

from paycore.errors import UnavailableError

__all__ = ["migration_scripts", "outdated_schema_error"]


def outdated_schema_error(store: str, missing: Sequence[str]) -> UnavailableError:
    """What a store that may not migrate at start-up raises when its schema lags."""
    return UnavailableError(
        f"shard {store}: the schema lacks migration(s) {', '.join(missing)}; "
        "apply them with `paycore migrate` (migrate_on_start is false)"
    )


def migration_scripts(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, file name, SQL)`` of every migration of ``dialect``'s folder, in order."""
    return list(_read_scripts(dialect))


@functools.cache
def _read_scripts(dialect: str) -> tuple[tuple[int, str, str], ...]:
    """Read once per process: a store's start (one per shard) asks again."""
    folder = resources.files(__name__) / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return tuple(sorted(found))
