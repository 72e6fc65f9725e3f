"""The import graph of ``src/paycore``: no cycle, and no import that points up.

The graph is read from the source with ``ast``: module-level and function-level imports
both count (a lazy import is still a dependency). Imports under ``if TYPE_CHECKING:`` never
run, so the run-time graph leaves them out; they still tie modules together for a reader
and for mypy, so a second graph keeps them, and the type-only cycles it finds are listed
below until they are fixed.

An edge goes to the most precise module named: ``from paycore.ops import keys`` is an
edge to ``paycore.ops.keys``, ``from paycore.storage import Store`` one to
``paycore.storage`` (its ``__init__``). The parent packages that Python also runs on the
way are left out: every package's ``__init__`` importing its own modules would otherwise
make each package a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

Graph = dict[str, set[str]]

# The product's layers, lowest first: a module imports nothing from a layer above its own.
LAYERS = (
    "paycore.ledger",
    "paycore.storage",
    "paycore.cluster",
    "paycore.fx",  # currency exchange: below payments, which settle through conversions
    "paycore.payments",
    "paycore.reconciliation",  # settlement reports: matches payments, books their psp: accounts
    "paycore.events",
    "paycore.workers",
    "paycore.api",
)
# Libraries every layer may use; they use no layer.
FOUNDATIONS = (
    "paycore.errors",
    "paycore.logs",
    "paycore.money",
    "paycore.redaction",
    "paycore.locks",
    "paycore.resilience",
)
# What runs or exercises the product; the product never imports it.
TOOLING = ("paycore.__main__", "paycore.cli", "paycore.ops", "paycore.tools", "paycore.chaos")
# Who may import ``paycore.tools``: the CLI, the tools themselves, and ``paycore.chaos``,
# itself a harness (it drives the local cluster and a throwaway PostgreSQL).
TOOLS_USERS = ("paycore.cli", "paycore.tools", "paycore.chaos")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / "paycore").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, *, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import below ``node``, at any depth; those under ``if TYPE_CHECKING:`` only
    when ``type_checking``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test) and not type_checking:
            for statement in child.orelse:
                yield from _imports_of(statement, type_checking=type_checking)
            continue
        yield from _imports_of(child, type_checking=type_checking)


def _imports_of(node: ast.AST, *, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _imports(node, type_checking=type_checking)


def _graph(*, type_checking: bool) -> Graph:
    """Module -> the paycore modules it imports (with ``type_checking``: TYPE_CHECKING ones too)."""
    modules = _modules()
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path)), type_checking=type_checking):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in modules}
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    graph[name].add(f"{base}.{alias.name}")
                elif base in modules:
                    graph[name].add(base)
    return graph


def _cycles(graph: Graph) -> set[frozenset[str]]:
    """The strongly connected components with a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.add(frozenset(component))
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if _within(module, (layer,))), None)


def _show(cycles: set[frozenset[str]]) -> str:
    return "\n".join("  " + " <-> ".join(sorted(c)) for c in sorted(cycles, key=sorted))


def test_no_import_cycle_at_run_time() -> None:
    """No module imports itself back, through any chain of imports that runs."""
    cycles = _cycles(_graph(type_checking=False))
    assert not cycles, f"import cycles:\n{_show(cycles)}"


def test_no_import_cycle_even_through_type_checking_imports() -> None:
    """Counting ``if TYPE_CHECKING:`` imports too, no module imports itself back: a type
    a lower module needs of a higher one is a protocol in the lower layer (``Store``,
    ``paycore.cluster.routing.Router``)."""
    cycles = _cycles(_graph(type_checking=True))
    assert not cycles, f"import cycles:\n{_show(cycles)}"


def test_no_layer_imports_a_layer_above_it() -> None:
    """ledger < storage < cluster < payments < events < workers < api: imports only point down."""
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph(type_checking=True).items()
        for target in sorted(targets)
        if (mine := _layer(module)) is not None
        and (theirs := _layer(target)) is not None
        and theirs > mine
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_foundations_import_no_layer_and_no_tooling() -> None:
    """errors, money, redaction, locks and resilience stand below every layer."""
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph(type_checking=True).items()
        if _within(module, FOUNDATIONS)
        for target in sorted(targets)
        if _within(target, LAYERS + TOOLING)
    ]
    assert not wrong, "a foundation imports a layer or tooling:\n" + "\n".join(wrong)


def test_the_product_imports_no_tooling() -> None:
    """Nothing that ships in a node imports the CLI, ops, tools or chaos."""
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph(type_checking=True).items()
        if not _within(module, TOOLING)
        for target in sorted(targets)
        if _within(target, TOOLING)
    ]
    assert not wrong, "the product imports tooling:\n" + "\n".join(wrong)


def test_only_the_cli_and_harnesses_import_tools() -> None:
    """paycore.tools is imported by the CLI, by itself and by chaos; ops never needs it."""
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph(type_checking=True).items()
        if not _within(module, TOOLS_USERS)
        for target in sorted(targets)
        if _within(target, ("paycore.tools",))
    ]
    assert not wrong, "imports of paycore.tools from outside the CLI:\n" + "\n".join(wrong)
