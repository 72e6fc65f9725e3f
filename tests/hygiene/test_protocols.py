"""Callers use a store through its protocol: no code outside the router asks whether a
store is the router's class, and none reaches past a store's or a snapshot's protocol by
looking a member up by name (``getattr(store, "payments")``).

Read from the source with ``ast``, as ``test_imports`` reads the import graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROUTER = SRC / "paycore" / "cluster" / "router.py"


def _calls(name: str) -> Iterator[tuple[Path, ast.Call]]:
    for path in sorted((SRC / "paycore").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == name
            ):
                yield path, node


def _named(node: ast.expr) -> str:
    """The last name of ``node`` (``self._store`` -> ``_store``), else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"


def test_only_the_router_asks_for_the_routers_class() -> None:
    """``isinstance(..., ShardedStore)`` stands nowhere but in the router itself."""
    found = [
        _where(path, call)
        for path, call in _calls("isinstance")
        if path != ROUTER
        and len(call.args) == 2
        and "ShardedStore" in {_named(n) for n in ast.walk(call.args[1]) if isinstance(n, ast.expr)}
    ]
    assert not found, "isinstance(..., ShardedStore) outside the router:\n" + "\n".join(found)


def test_no_member_of_a_store_or_snapshot_is_looked_up_by_name() -> None:
    """No ``getattr(store, "...")`` or ``getattr(snapshot, "...")``: what a caller needs of
    a store or a snapshot is in its protocol (``Store``, ``LedgerSnapshot``, ``ShardSnapshot``)."""
    found = [
        _where(path, call)
        for path, call in _calls("getattr")
        if call.args
        and len(call.args) >= 2
        and isinstance(call.args[1], ast.Constant)
        and _named(call.args[0]).lower().endswith(("store", "snapshot", "snap"))
    ]
    assert not found, "members looked up by name past a protocol:\n" + "\n".join(found)
