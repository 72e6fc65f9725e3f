"""``paycore bench --report DIR``: the run as a markdown table and PNG charts, beside the
run before it.

Built from the ``BenchReport`` the run printed (nothing is measured again). ``DIR`` gets:

* ``report.md``: the machine, its load and the command; one row per scenario
  (transfers/s, p50/p99, errors) with, when ``DIR`` held a report, the previous numbers
  and the change beside them; the cost per transfer per tenth of the batches (the ledger
  growing), the accounts sweep, the targets, memory, audits and skipped rows.
* ``throughput.png`` (transfers/s per scenario; in-process batches and HTTP requests in
  panels of their own, pgbench's TPS drawn across both), ``latency.png`` (p50/p99 per
  HTTP scenario), ``ledger_growth.png`` (us per transfer as the ledger grows, and as the
  accounts grow over PostgreSQL); the previous run as lighter bars and dashed lines.
  Charts need matplotlib (``pip install 'paycore[bench]'``); without it the markdown is
  still written, saying so, and the run's exit status is unchanged.
* ``report.json``: this run (the ``--json`` document), which the next run into ``DIR``
  compares with; ``previous.json``: the report it was compared with.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape

from paycore.tools.bench.report import (
    BenchReport,
    ScenarioResult,
    durability_label,
    finish_report,
)

__all__ = [
    "CHARTS",
    "CHARTS_HINT",
    "REPORT_JSON",
    "REPORT_MD",
    "draw_charts",
    "finish_run",
    "load_previous",
    "render_markdown",
    "write_report",
]


REPORT_MD = "report.md"


REPORT_JSON = "report.json"


PREVIOUS_JSON = "previous.json"


CHARTS = ("throughput.png", "latency.png", "ledger_growth.png")


CHARTS_HINT = "charts need matplotlib: pip install 'paycore[bench]'"


def finish_run(report: BenchReport, args: argparse.Namespace, console: Console) -> int:
    """``finish_report`` (targets, printing, ``--json``, the exit status), then
    ``--report DIR``; 1 when the report could not be written."""
    status = finish_report(report, args, console)
    if args.report is not None:
        try:
            write_report(report, args.report, console)
        except OSError as exc:
            console.print(f"[red]{escape(f'--report {args.report}: {exc}')}[/]")
            return status or 1
    return status


def load_previous(directory: Path) -> tuple[BenchReport | None, str | None]:
    """The report ``directory`` holds (None when none) and, when one is there but cannot
    be read, why it is not compared."""
    path = directory / REPORT_JSON
    if not path.is_file():
        return None, None
    try:
        return msgspec.json.decode(path.read_bytes(), type=BenchReport), None
    except (OSError, msgspec.DecodeError) as exc:
        return None, f"{path} could not be read ({exc}): not compared"


def write_report(report: BenchReport, directory: Path, console: Console) -> list[Path]:
    """Write ``report.md``, the charts and ``report.json`` into ``directory`` (made if
    missing), beside the report it held before; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    previous, unreadable = load_previous(directory)
    written: list[Path] = []
    if previous is not None:
        (directory / PREVIOUS_JSON).write_bytes((directory / REPORT_JSON).read_bytes())
        written.append(directory / PREVIOUS_JSON)
    charts = draw_charts(report, previous, directory)
    for name in CHARTS:  # a chart the last run drew and this one has no data for
        if charts is None or name not in charts:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
    notes = [unreadable] if unreadable else []
    md = directory / REPORT_MD
    md.write_text(render_markdown(report, previous, charts=charts, notes=notes))
    json_path = directory / REPORT_JSON
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    written += [md, *(directory / name for name in charts or ()), json_path]
    if unreadable:
        console.print(f"[yellow]{escape(unreadable)}[/]")
    if charts is None:
        console.print(
            f"[yellow]{escape(f'--report: no charts drawn ({CHARTS_HINT}); markdown only')}[/]"
        )
    against = "" if previous is None else f", compared with the run of {_when(previous)}"
    charts_drawn = f" and {len(charts)} chart(s)" if charts else ""
    console.print(escape(f"wrote {md}{charts_drawn}{against}"))
    return written


# -- markdown ---------------------------------------------------------------------------


def render_markdown(
    report: BenchReport,
    previous: BenchReport | None,
    *,
    charts: Sequence[str] | None = (),
    notes: Sequence[str] = (),
) -> str:
    """The report as markdown; ``previous``'s numbers beside the new ones when given;
    ``charts``: the PNG files drawn beside it (None: matplotlib is missing)."""
    lines = ["# paycore bench report", ""]
    lines += _header(report, previous, notes)
    lines += _scenarios(report, previous)
    lines += _growth(report, previous)
    lines += _sweep(report, previous)
    lines += _targets(report, previous)
    lines += _other(report, previous)
    lines += ["## Charts", ""]
    if charts is None:
        lines += [f"Not drawn: {CHARTS_HINT}.", ""]
    elif not charts:
        lines += ["None: no scenario to draw.", ""]
    for name in charts or ():
        lines += [f"![{name.removesuffix('.png').replace('_', ' ')}]({name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _when(report: BenchReport) -> str:
    return report.finished or "an unrecorded time"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _change(new: float | None, old: float | None) -> str:
    if new is None or old is None or not old:
        return "-"
    return f"{new / old - 1:+.1%}"


def _machine(report: BenchReport) -> str:
    env = report.environment
    text = (
        f"{env.get('cpus', '?')} CPUs ({env.get('cpu_model', '?')}), "
        f"{env.get('platform', '?')}, Python {env.get('python', '?')}"
    )
    if report.backend == "postgres":
        pg = report.postgres
        settings = pg.get("settings", {})
        flat = settings if "fsync" in settings else next(iter(settings.values()), {})
        durable = "durable commits" if pg.get("durable") else "**NOT durable**"
        text += (
            f"; PostgreSQL {env.get('postgres', '?')} ({pg.get('source', '?')}, "
            f"{pg.get('shards', '?')} shard(s)): {durability_label(flat)}: {durable}"
            + (" (--pg-fast)" if pg.get("pg_fast") else "")
        )
    else:
        text += (
            f", SQLite {env.get('sqlite', '?')} "
            f"(synchronous={report.options.get('synchronous', '?')}, "
            f"{report.options.get('shards', '?')} shard(s))"
        )
    return text


def _load(env: dict[str, Any]) -> str:
    def three(key: str) -> str:
        values = env.get(key) or []
        return " / ".join(f"{v:.2f}" for v in values) if values else "?"

    return (
        f"load average (1 / 5 / 15 min) {three('load_average_start')} at the start, "
        f"{three('load_average_end')} at the end"
    )


def _header(report: BenchReport, previous: BenchReport | None, notes: Sequence[str]) -> list[str]:
    errors = sum(r.errors for r in report.results)
    state = f"**{errors:,} errors**" if errors else "no errors"
    if not report.audits:
        state += ", not audited"
    elif all(report.audits.values()):
        state += ", audits clean"
    else:
        state += ", **audit violations**"
    lines = [
        f"Finished {_when(report)}: {state}.",
        "",
        "```sh",
        report.command,
        "```",
        "",
        f"- Machine: {_machine(report)}.",
        f"- Load: {_load(report.environment)}.",
    ]
    if report.backend == "postgres" and "pgbench_command" in report.postgres:
        lines.append(f"- pgbench: `{report.postgres['pgbench_command']}`.")
    if previous is None:
        lines.append("- Previous report: none in this directory, nothing to compare with.")
    else:
        lines.append(
            f"- Previous report (compared below): finished {_when(previous)}, "
            f"`{previous.command}`; {_load(previous.environment)}."
        )
        differ = _differences(report, previous)
        if differ:
            lines.append(
                "- **Not like for like**: the previous run differs in " + ", ".join(differ) + "."
            )
    lines += [f"- Note: {note}" for note in notes]
    return [*lines, ""]


def _differences(report: BenchReport, previous: BenchReport) -> list[str]:
    out = []
    if report.backend != previous.backend:
        out.append(f"backend ({previous.backend} -> {report.backend})")
    for key in sorted(set(report.options) | set(previous.options)):
        old, new = previous.options.get(key), report.options.get(key)
        if old != new:
            out.append(f"{key} ({old} -> {new})")
    for key in ("cpus", "cpu_model", "python", "sqlite", "postgres"):
        old, new = previous.environment.get(key), report.environment.get(key)
        if old != new and old is not None and new is not None:
            out.append(f"{key} ({old} -> {new})")
    return out


def _by_name(report: BenchReport | None) -> dict[str, ScenarioResult]:
    return {} if report is None else {r.name: r for r in report.results}


def _scenarios(report: BenchReport, previous: BenchReport | None) -> list[str]:
    lines = ["## Scenarios", ""]
    if not report.results:
        return [*lines, "No scenario ran.", ""]
    old = _by_name(previous)
    header = ["scenario", "latency of", "transfers", "seconds", "transfers/s"]
    if previous is not None:
        header += ["previous /s", "change"]
    header += ["p50 ms", "p99 ms"]
    if previous is not None:
        header += ["previous p50 / p99 ms", "p99 change"]
    header.append("errors")
    rows: list[list[object]] = []
    for r in report.results:
        row: list[object] = [
            r.name, r.latency_of, f"{r.transfers:,}", f"{r.seconds:.2f}", f"{r.rate_per_s:,.0f}"
        ]  # fmt: skip
        p = old.get(r.name)
        if previous is not None:
            row += [
                f"{p.rate_per_s:,.0f}" if p else "-",
                _change(r.rate_per_s, p.rate_per_s if p else None),
            ]
        row += [f"{r.p50_ms:,.1f}", f"{r.p99_ms:,.1f}"]
        if previous is not None:
            row += [
                f"{p.p50_ms:,.1f} / {p.p99_ms:,.1f}" if p else "-",
                _change(r.p99_ms, p.p99_ms if p else None),
            ]
        row.append(f"{r.errors:,}")
        rows.append(row)
    lines += _table(header, rows)
    gone = [name for name in old if name not in _by_name(report)]
    if gone:
        lines += [f"In the previous report only: {', '.join(gone)}.", ""]
    pgb = _by_name(report).get("pgbench-tpcb")
    if pgb is not None:
        lines += [
            f"pgbench-tpcb is pgbench's tpcb-like script on the same server: its rate is "
            f"transactions per second ({pgb.rate_per_s:,.0f} TPS), the line drawn across "
            "the throughput chart.",
            "",
        ]
    return lines


def _us(rate: float) -> str:
    return f"{1e6 / rate:.1f}" if rate > 0 else "-"


def _growth_rows(report: BenchReport | None) -> list[ScenarioResult]:
    if report is None:
        return []
    return [r for r in report.results if len(r.detail.get("rate_per_decile") or ()) == 10]


def _growth(report: BenchReport, previous: BenchReport | None) -> list[str]:
    rows = _growth_rows(report)
    if not rows:
        return []
    old = {r.name: r for r in _growth_rows(previous)}
    lines = [
        "## Cost per transfer as the ledger grows",
        "",
        "Microseconds of wall-clock per transfer in each tenth of the in-process batches "
        "(in the order they finished; the ledger grows as they go), and the last tenth "
        "against the first.",
        "",
    ]
    header = ["scenario", *(f"{k}/10" for k in range(1, 11)), "last / first tenth"]
    if previous is not None:
        header.append("previous last / first")
    table: list[list[object]] = []
    for r in rows:
        rates = r.detail["rate_per_decile"]
        ratio = rates[0] / rates[-1] if rates[-1] else None
        row: list[object] = [r.name, *(_us(x) for x in rates)]
        row.append("-" if ratio is None else f"{ratio:.2f}x")
        if previous is not None:
            p = old.get(r.name)
            p_rates = p.detail["rate_per_decile"] if p else None
            row.append(f"{p_rates[0] / p_rates[-1]:.2f}x" if p_rates and p_rates[-1] else "-")
        table.append(row)
    return lines + _table(header, table)


def _sweep_rows(report: BenchReport | None) -> list[ScenarioResult]:
    if report is None:
        return []
    return sorted(
        (r for r in report.results if r.name.startswith("pg-sweep-") and "accounts" in r.detail),
        key=lambda r: int(r.detail["accounts"]),
    )


def _sweep(report: BenchReport, previous: BenchReport | None) -> list[str]:
    rows = _sweep_rows(report)
    if not rows:
        return []
    old = {int(r.detail["accounts"]): r for r in _sweep_rows(previous)}
    base = rows[0].rate_per_s
    header = ["accounts", "transfers/s", "us/transfer", "vs fewest"]
    if previous is not None:
        header += ["previous us/transfer", "change"]
    header.append("fresh ledger")
    table: list[list[object]] = []
    for r in rows:
        accounts = int(r.detail["accounts"])
        row: list[object] = [
            f"{accounts:,}",
            f"{r.rate_per_s:,.0f}",
            _us(r.rate_per_s),
            f"{base / r.rate_per_s:.2f}x" if r.rate_per_s else "-",
        ]
        if previous is not None:
            p = old.get(accounts)
            row += [
                _us(p.rate_per_s) if p else "-",
                _change(
                    1 / r.rate_per_s if r.rate_per_s else None,
                    1 / p.rate_per_s if p and p.rate_per_s else None,
                ),
            ]
        row.append("yes" if r.detail.get("fresh_ledger") else "no")
        table.append(row)
    return ["## Cost per transfer as the accounts grow", "", *_table(header, table)]


def _targets(report: BenchReport, previous: BenchReport | None) -> list[str]:
    if not report.targets:
        return []
    old = {} if previous is None else {t.name: t for t in previous.targets}
    header = ["target", "wanted", "measured"]
    if previous is not None:
        header.append("previous")
    header += ["x goal", "met", "what"]
    rows: list[list[object]] = []
    for t in report.targets:
        row: list[object] = [t.name, t.target, t.measured]
        if previous is not None:
            p = old.get(t.name)
            row.append(f"{p.measured} ({'met' if p.met else 'missed'})" if p else "-")
        row += [
            "-" if t.goal_ratio is None else f"{t.goal_ratio:.2f}",
            "met" if t.met else "**missed**",
            t.what,
        ]
        rows.append(row)
    return ["## Targets", "", *_table(header, rows)]


def _other(report: BenchReport, previous: BenchReport | None) -> list[str]:
    lines: list[str] = []

    def was(value: float | None) -> str:
        return "" if value is None else f" (previous {value:.0f} MB)"

    if report.inproc_rss_mb:
        rss = report.inproc_rss_mb
        before = previous.inproc_rss_mb.get("peak_mb") if previous else None
        lines.append(
            f"- Bench process (in-process store, {report.options.get('accounts', 0):,} "
            f"accounts): RSS {rss.get('rss_mb', 0):.0f} MB, peak {rss.get('peak_mb', 0):.0f} MB"
            + was(before)
            + "."
        )
    if report.server_rss_mb:
        before = previous.server_rss_mb.get("peak_mb") if previous else None
        lines.append(
            f"- paycore serve peak RSS (VmHWM): {report.server_rss_mb.get('peak_mb', 0):.0f} MB"
            + was(before)
            + "."
        )
    for name, ok in report.audits.items():
        lines.append(f"- Audit {name}: " + ("clean." if ok else "**VIOLATIONS**."))
    for row, why in report.skipped.items():
        lines.append(f"- Skipped {row}: {why}")
    return ["## Memory, audits, skipped rows", "", *lines, ""] if lines else []


# -- charts -----------------------------------------------------------------------------


CURRENT = "tab:blue"


OLDER = "tab:gray"


def draw_charts(
    report: BenchReport, previous: BenchReport | None, directory: Path
) -> list[str] | None:
    """The PNG charts of ``report`` (``previous`` drawn lighter) in ``directory``: the
    names of those drawn (a chart without data is not drawn); None without matplotlib."""
    try:
        import matplotlib as mpl  # noqa: PLC0415

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    drawn = []
    charts: tuple[tuple[str, Callable[[Any, BenchReport, BenchReport | None], Any]], ...] = (
        ("throughput.png", _throughput),
        ("latency.png", _latency),
        ("ledger_growth.png", _ledger_growth),
    )
    for name, draw in charts:
        fig = draw(plt, report, previous)
        if fig is None:
            continue
        try:
            fig.tight_layout()
            fig.savefig(directory / name, dpi=100)
        finally:
            plt.close(fig)
        drawn.append(name)
    return drawn


def _bars(
    ax: Any,
    names: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str, float]],
    fmt: str,
) -> None:
    """Grouped bars: one group per name, one bar per series (label, values, colour,
    alpha); a None value draws no bar."""
    width = 0.8 / len(series)
    for i, (label, values, colour, alpha) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        if not points:
            continue
        bars = ax.bar(
            [x for x, _ in points],
            [v for _, v in points],
            width,
            label=label,
            color=colour,
            alpha=alpha,
        )
        ax.bar_label(bars, labels=[fmt.format(v) for _, v in points], fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.margins(y=0.15)


def _throughput(plt: Any, report: BenchReport, previous: BenchReport | None) -> Any:
    old = _by_name(previous)
    panels = [
        (kind, title, [r for r in report.results if r.latency_of == kind and not _is_sweep(r)])
        for kind, title in (("batch", "in-process batches"), ("request", "HTTP requests"))
    ]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    pgb = _by_name(report).get("pgbench-tpcb")
    old_pgb = old.get("pgbench-tpcb")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8), squeeze=False)
    for ax, (_, title, rows) in zip(axes[0], panels, strict=True):
        names = [r.name for r in rows]
        series: list[tuple[str, Sequence[float | None], str, float]] = []
        if previous is not None:
            values = [old[n].rate_per_s if n in old else None for n in names]
            series.append(("previous", values, OLDER, 0.45))
        series.append(("this run", [r.rate_per_s for r in rows], CURRENT, 1.0))
        _bars(ax, names, series, "{:,.0f}")
        if pgb is not None and pgb.rate_per_s > 0:
            ax.axhline(
                pgb.rate_per_s,
                color="tab:red",
                linestyle="--",
                label=f"pgbench tpcb-like {pgb.rate_per_s:,.0f} TPS",
            )
        if old_pgb is not None and old_pgb.rate_per_s > 0:
            ax.axhline(
                old_pgb.rate_per_s,
                color="tab:red",
                alpha=0.35,
                linestyle=":",
                label=f"previous pgbench {old_pgb.rate_per_s:,.0f} TPS",
            )
        ax.set_title(f"throughput: {title}")
        ax.set_ylabel("transfers per second")
        ax.yaxis.set_major_formatter("{x:,.0f}")
        ax.legend(fontsize=7)
    return fig


def _is_sweep(r: ScenarioResult) -> bool:
    return r.name.startswith("pg-sweep-")


def _latency(plt: Any, report: BenchReport, previous: BenchReport | None) -> Any:
    rows = [r for r in report.results if r.latency_of == "request"]
    if not rows:
        return None
    old = _by_name(previous)
    names = [r.name for r in rows]
    series: list[tuple[str, Sequence[float | None], str, float]] = []
    for label, field, colour in (("p50", "p50_ms", "tab:blue"), ("p99", "p99_ms", "tab:orange")):
        if previous is not None:
            values = [float(getattr(old[n], field)) if n in old else None for n in names]
            series.append((f"previous {label}", values, colour, 0.35))
        series.append((label, [float(getattr(r, field)) for r in rows], colour, 1.0))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(rows)), 4.8))
    _bars(ax, names, series, "{:.1f}")
    ax.set_title("latency per HTTP request")
    ax.set_ylabel("milliseconds")
    ax.legend(fontsize=7)
    return fig


def _ledger_growth(plt: Any, report: BenchReport, previous: BenchReport | None) -> Any:
    growth, sweep = _growth_rows(report), _sweep_rows(report)
    if not growth and not sweep:
        return None
    panels = [p for p in ("growth", "sweep") if (growth if p == "growth" else sweep)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "growth":
            old = {r.name: r for r in _growth_rows(previous)}
            for i, r in enumerate(growth):
                _line(ax, r, colours(i % 10), r.name)
                if r.name in old:
                    _line(ax, old[r.name], colours(i % 10), f"{r.name} (previous)", old=True)
            ax.set_title("cost per transfer as the ledger grows")
            ax.set_xlabel("transfers written in the scenario (end of each tenth of the batches)")
        else:
            for rows, label, is_old in (
                (sweep, "this run", False),
                (_sweep_rows(previous), "previous", True),
            ):
                if not rows:
                    continue
                ax.plot(
                    [int(r.detail["accounts"]) for r in rows],
                    [1e6 / r.rate_per_s if r.rate_per_s else float("nan") for r in rows],
                    marker="o",
                    linestyle="--" if is_old else "-",
                    alpha=0.4 if is_old else 1.0,
                    color=colours(0),
                    label=label,
                )
            ax.set_xscale("log")
            ax.set_title("cost per transfer as the accounts grow (PostgreSQL)")
            ax.set_xlabel("accounts in the ledger")
        ax.set_ylabel("microseconds per transfer")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter("{x:,.0f}")
        ax.legend(fontsize=7)
    return fig


def _line(ax: Any, r: ScenarioResult, colour: Any, label: str, *, old: bool = False) -> None:
    ax.plot(
        r.detail["transfers_at_decile"],
        [1e6 / x if x else float("nan") for x in r.detail["rate_per_decile"]],
        marker="o",
        linestyle="--" if old else "-",
        alpha=0.4 if old else 1.0,
        color=colour,
        label=label,
    )
