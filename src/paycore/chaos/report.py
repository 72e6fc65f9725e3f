"""What a chaos run tells: counts, a JSON report, and a timeline plot.

``summarize`` counts operations (acknowledged, refused, ambiguous, per kind), faults per
kind (injected, skipped) and violations per kind; ``print_summary`` shows it as rich
tables; ``write_report`` writes it (with every violation and fault) as JSON;
``plot_timeline`` draws throughput and errors per second with the fault windows shaded
(matplotlib, Agg backend: no display needed; optional, in the ``chaos`` extra).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from paycore.chaos.checker import Violation
from paycore.chaos.history import Attempt, Outcome, group_ops, op_outcome
from paycore.chaos.nemesis import FaultRecord

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ChaosReport", "plot_timeline", "print_summary", "summarize", "write_report"]


class ChaosReport(msgspec.Struct, kw_only=True):
    """The run in numbers (see the module docstring)."""

    seed: int
    seconds: float
    ops: int
    attempts: int
    acknowledged: int
    refused: int
    ambiguous: int
    ambiguous_answers: int  # attempts answered ambiguously (then retried, most resolved)
    by_kind: dict[str, dict[str, int]]
    faults: dict[str, dict[str, int]]
    violations_by_kind: dict[str, int]
    quiet_after: float
    ok: bool
    violations: list[Violation] = []
    fault_log: list[FaultRecord] = []
    notes: list[str] = []


def summarize(
    history: Sequence[Attempt],
    faults: Sequence[FaultRecord],
    violations: Sequence[Violation],
    *,
    seed: int,
    seconds: float,
    quiet_after: float,
    notes: Sequence[str] = (),
) -> ChaosReport:
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    ops = group_ops(history)
    for attempts in ops.values():
        outcome = op_outcome(attempts).value
        by_kind[attempts[0].kind][outcome] += 1
        totals[outcome] += 1
    fault_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for record in faults:
        fault_counts[record.fault.kind.value]["injected" if record.injected else "skipped"] += 1
    return ChaosReport(
        seed=seed,
        seconds=round(seconds, 1),
        ops=len(ops),
        attempts=len(history),
        acknowledged=totals[Outcome.OK.value],
        refused=totals[Outcome.FAIL.value],
        ambiguous=totals[Outcome.INFO.value],
        ambiguous_answers=sum(a.outcome is Outcome.INFO for a in history),
        by_kind={k: dict(v) for k, v in sorted(by_kind.items())},
        faults={k: dict(v) for k, v in sorted(fault_counts.items())},
        violations_by_kind=dict(Counter(v.kind.value for v in violations)),
        quiet_after=round(quiet_after, 1),
        ok=not violations,
        violations=list(violations),
        fault_log=list(faults),
        notes=list(notes),
    )


def write_report(report: ChaosReport, path: Path) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")


def print_summary(report: ChaosReport, console: Console, *, limit: int = 30) -> None:
    from rich.table import Table  # noqa: PLC0415

    ops = Table(title=f"chaos run: {report.seconds:g} s, seed {report.seed}")
    for column in ("operation", "ops", "acknowledged", "refused", "ambiguous"):
        ops.add_column(column, justify="left" if column == "operation" else "right")
    for kind, counts in report.by_kind.items():
        ok, fail, info = (counts.get(o.value, 0) for o in Outcome)
        ops.add_row(kind, str(ok + fail + info), str(ok), str(fail), str(info))
    ops.add_row(
        "[bold]all[/]",
        str(report.ops),
        str(report.acknowledged),
        str(report.refused),
        str(report.ambiguous),
    )
    console.print(ops)
    faults = Table(title="faults")
    for column in ("kind", "injected", "skipped"):
        faults.add_column(column, justify="left" if column == "kind" else "right")
    for kind, counts in report.faults.items():
        faults.add_row(kind, str(counts.get("injected", 0)), str(counts.get("skipped", 0)))
    console.print(faults)
    console.print(
        f"{report.attempts} HTTP attempts, {report.ambiguous_answers} answered ambiguously "
        "(timeout, reset, 5xx, key in use) and retried with the same key; "
        f"quiet {report.quiet_after:g} s after the faults stopped"
    )
    for note in report.notes:
        console.print(f"note: {note}")
    if report.ok:
        console.print("[bold green]no violation[/]")
        return
    tally = ", ".join(f"{k} {n}" for k, n in sorted(report.violations_by_kind.items()))
    console.print(f"[bold red]{len(report.violations)} violations[/]: {tally}")
    for v in report.violations[:limit]:
        console.print(f"  [red]{v.kind.value}[/] {v.detail}", markup=True, highlight=False)


def plot_timeline(
    history: Sequence[Attempt], faults: Sequence[FaultRecord], t0: float, path: Path
) -> bool:
    """Throughput (acknowledged) and errors (refused, ambiguous) per second since ``t0``,
    fault windows shaded and labelled; False when matplotlib is not installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.patches import Rectangle  # noqa: PLC0415
    except ImportError:
        return False
    per_second: dict[str, Counter[int]] = {o.value: Counter() for o in Outcome}
    end = 0
    for a in history:
        second = int(a.complete_mono - t0)
        if second < 0:
            continue
        per_second[a.outcome.value][second] += 1
        end = max(end, second)
    xs = list(range(end + 1))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    labels = {"ok": "acknowledged /s", "fail": "refused /s", "info": "ambiguous /s"}
    colours = {"ok": "tab:green", "fail": "tab:orange", "info": "tab:red"}
    for outcome, counts in per_second.items():
        ax.plot(xs, [counts[x] for x in xs], label=labels[outcome], color=colours[outcome])
    palette = plt.get_cmap("tab10")
    kinds = sorted({r.fault.kind.value for r in faults})
    top = ax.get_ylim()[1] or 1.0
    for record in faults:
        if not record.injected:
            continue
        colour = palette(kinds.index(record.fault.kind.value) % 10)
        start, stop = record.start_mono - t0, record.end_mono - t0
        ax.axvspan(start, stop, color=colour, alpha=0.18, lw=0)
        ax.text(start, top * 0.97, record.fault.kind.value, rotation=90, va="top", fontsize=7)
    ax.set_xlabel("seconds since the workload started")
    ax.set_ylabel("HTTP attempts per second")
    ax.set_title("chaos run: throughput and errors, faults shaded")
    handles, names = ax.get_legend_handles_labels()
    patches: list[Any] = [
        Rectangle((0, 0), 1, 1, color=palette(i % 10), alpha=0.3) for i in range(len(kinds))
    ]
    ax.legend([*handles, *patches], [*names, *kinds], loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
