"""``paycore bench --report DIR``: the markdown table and PNG charts of a run, beside the
run before it. Reports are built by hand (nothing is measured), so every number is known."""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from paycore.cli import _parser, main
from paycore.tools.bench.inproc import decile_rates
from paycore.tools.bench.options import UsageError, check_report_dir, command_line
from paycore.tools.bench.options import resolve_options as resolve
from paycore.tools.bench.report import BenchReport, ScenarioResult, TargetCheck
from paycore.tools.bench.report_dir import (
    CHARTS,
    REPORT_JSON,
    REPORT_MD,
    draw_charts,
    finish_run,
    render_markdown,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(
    name: str,
    rate: float,
    p50: float,
    p99: float,
    *,
    latency_of: str = "batch",
    detail: dict[str, object] | None = None,
) -> ScenarioResult:
    transfers = int(rate * 10)
    return ScenarioResult(
        name=name,
        transfers=transfers,
        seconds=10.0,
        rate_per_s=rate,
        p50_ms=p50,
        p95_ms=(p50 + p99) / 2,
        p99_ms=p99,
        max_ms=p99 * 1.5,
        latency_of=latency_of,
        detail=dict(detail or {}),
    )


def _deciles(first: float, step: float) -> dict[str, object]:
    """A rate falling by ``step`` a tenth, over 1,000 transfers a tenth."""
    return {
        "rate_per_decile": [first - step * k for k in range(10)],
        "transfers_at_decile": [1000.0 * (k + 1) for k in range(10)],
    }


def _sqlite(scale: float = 1.0, finished: str = "2026-12-08T03:00:00+00:00") -> BenchReport:
    """The embedded default's rows, every rate times ``scale``."""
    return BenchReport(
        command="paycore bench --transfers 491340",
        environment={
            "python": "3.11.7",
            "sqlite": "3.40.1",
            "cpus": 2,
            "cpu_model": "Test CPU",
            "platform": "Linux-test",
            "load_average_start": [1.5, 1.25, 1.0],
            "load_average_end": [2.0, 1.5, 1.0],
        },
        options={
            "synchronous": "FULL",
            "shards": 1,
            "accounts": 10_000,
            "batch_size": 8189,
            "clients": 64,
            "quick": False,
        },
        results=[
            _row("inproc-uniform", 20_000 * scale, 600, 800, detail=_deciles(40_000, 2_000)),
            _row("inproc-hot", 25_000 * scale, 500, 700),
            _row("http-uniform", 3_000 * scale, 19.4, 61.1, latency_of="request"),
            _row("http-hot", 3_500 * scale, 15.5, 48.0, latency_of="request"),
        ],
        server_rss_mb={"peak_mb": 68.0},
        inproc_rss_mb={"rss_mb": 120.0, "peak_mb": 130.0},
        targets=[
            TargetCheck(
                "HTTP rate", ">= 2,000/s", f"{3_000 * scale:,.0f}/s", True, "HTTP", 1.5 * scale
            )
        ],
        audits={"inproc": True, "http": True},
        finished=finished,
    )


def _swept(accounts: int) -> dict[str, object]:
    return {"accounts": accounts, "fresh_ledger": True}


def _postgres() -> BenchReport:
    return BenchReport(
        command="paycore bench --local-postgres 2",
        environment={"python": "3.11.7", "cpus": 2, "postgres": "16.4"},
        options={"batch_size": 8189, "clients": 64},
        backend="postgres",
        postgres={
            "source": "local",
            "shards": 2,
            "durable": True,
            "settings": {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
            "pgbench_command": "pgbench -i -s 16 db && pgbench -b tpcb-like -c 16 db",
        },
        results=[
            _row(
                "pgbench-tpcb", 2_042, 7.0, 20.0, latency_of="transaction", detail={"clients": 16}
            ),
            _row("pg-inproc-uniform", 5_661, 900, 1200),
            _row("pg-http-uniform", 468, 120.0, 400.0, latency_of="request"),
            _row("pg-sweep-10000", 10_000, 700, 900, detail=_swept(10_000)),
            _row("pg-sweep-1000000", 8_000, 800, 1000, detail=_swept(1_000_000)),
        ],
    )


def _table(markdown: str, section: str) -> list[list[str]]:
    """The rows (header first, no separator) of the first table under ``## section``."""
    body = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows if "---" not in row]


def _quiet() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False), out


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400, (path, width)
    assert height >= 300, (path, height)


# -- the markdown -----------------------------------------------------------------------


def test_the_table_holds_each_scenarios_numbers(tmp_path: Path) -> None:
    console, out = _quiet()
    write_report(_sqlite(), tmp_path / "r", console)
    md = (tmp_path / "r" / REPORT_MD).read_text()
    rows = _table(md, "Scenarios")
    assert rows[0] == [
        "scenario", "latency of", "transfers", "seconds", "transfers/s", "p50 ms", "p99 ms",
        "errors",
    ]  # fmt: skip
    assert rows[1:] == [
        ["inproc-uniform", "batch", "200,000", "10.00", "20,000", "600.0", "800.0", "0"],
        ["inproc-hot", "batch", "250,000", "10.00", "25,000", "500.0", "700.0", "0"],
        ["http-uniform", "request", "30,000", "10.00", "3,000", "19.4", "61.1", "0"],
        ["http-hot", "request", "35,000", "10.00", "3,500", "15.5", "48.0", "0"],
    ]
    assert "paycore bench --transfers 491340" in md
    assert ": no errors, audits clean." in md
    assert "2 CPUs (Test CPU), Linux-test, Python 3.11.7, SQLite 3.40.1" in md
    assert "1.50 / 1.25 / 1.00 at the start, 2.00 / 1.50 / 1.00 at the end" in md
    assert "none in this directory" in md
    # The ledger growing: us per transfer per tenth (1e6 / 40,000 = 25.0 ... / 22,000).
    (header, uniform) = _table(md, "Cost per transfer as the ledger grows")
    assert header[1] == "1/10"
    assert header[10] == "10/10"
    assert uniform[0] == "inproc-uniform"
    assert uniform[1] == "25.0"
    assert uniform[10] == "45.5"
    assert uniform[11] == "1.82x"
    assert _table(md, "Targets")[1][:3] == ["HTTP rate", ">= 2,000/s", "3,000/s"]
    assert "paycore serve peak RSS (VmHWM): 68 MB." in md
    assert "Audit http: clean." in md
    assert "![throughput](throughput.png)" in md
    assert f"wrote {tmp_path / 'r' / REPORT_MD} and 3 chart(s)" in out.getvalue()


def test_the_charts_are_png_files(tmp_path: Path) -> None:
    written = write_report(_sqlite(), tmp_path, _quiet()[0])
    for name in CHARTS:
        _assert_png(tmp_path / name)
        assert tmp_path / name in written
    stored = msgspec.json.decode((tmp_path / REPORT_JSON).read_bytes(), type=BenchReport)
    assert stored == _sqlite()


def test_a_second_report_shows_the_previous_numbers_and_the_change(tmp_path: Path) -> None:
    write_report(_sqlite(), tmp_path, _quiet()[0])
    console, out = _quiet()
    write_report(_sqlite(scale=1.1, finished="2026-12-08T04:00:00+00:00"), tmp_path, console)
    md = (tmp_path / REPORT_MD).read_text()
    rows = _table(md, "Scenarios")
    assert rows[0][4:7] == ["transfers/s", "previous /s", "change"]
    assert rows[0][9:11] == ["previous p50 / p99 ms", "p99 change"]
    assert rows[1][:6] == ["inproc-uniform", "batch", "220,000", "10.00", "22,000", "20,000"]
    assert rows[1][6] == "+10.0%"
    assert rows[3][4:11] == ["3,300", "3,000", "+10.0%", "19.4", "61.1", "19.4 / 61.1", "+0.0%"]
    assert "finished 2026-12-08T03:00:00+00:00" in md
    assert "Not like for like" not in md
    assert _table(md, "Targets")[1][2:4] == ["3,300/s", "3,000/s (met)"]
    assert "(previous 68 MB)" in md
    assert "compared with the run of 2026-12-08T03:00:00+00:00" in out.getvalue()
    assert (tmp_path / "previous.json").is_file()
    for name in CHARTS:
        _assert_png(tmp_path / name)
    # A third run compares with the second.
    write_report(_sqlite(scale=1.2), tmp_path, _quiet()[0])
    rows = _table((tmp_path / REPORT_MD).read_text(), "Scenarios")
    assert rows[1][4:7] == ["24,000", "22,000", "+9.1%"]


def test_a_different_run_is_flagged_and_missing_rows_listed(tmp_path: Path) -> None:
    previous = _sqlite()
    previous.results.append(_row("http-payments", 600, 50, 90, latency_of="request"))
    write_report(previous, tmp_path, _quiet()[0])
    quick = _sqlite()
    quick.options = {**quick.options, "quick": True}
    write_report(quick, tmp_path, _quiet()[0])
    md = (tmp_path / REPORT_MD).read_text()
    assert "**Not like for like**: the previous run differs in quick (False -> True)." in md
    assert "In the previous report only: http-payments." in md


def test_an_unreadable_previous_report_is_not_compared(tmp_path: Path) -> None:
    (tmp_path / REPORT_JSON).write_text("{not json")
    console, out = _quiet()
    write_report(_sqlite(), tmp_path, console)
    md = (tmp_path / REPORT_MD).read_text()
    assert "could not be read" in md
    assert "could not be read" in out.getvalue()
    assert "previous /s" not in md
    assert msgspec.json.decode((tmp_path / REPORT_JSON).read_bytes(), type=BenchReport)


def test_postgres_pgbench_line_and_accounts_sweep(tmp_path: Path) -> None:
    write_report(_postgres(), tmp_path, _quiet()[0])
    md = (tmp_path / REPORT_MD).read_text()
    assert "PostgreSQL 16.4 (local, 2 shard(s)): fsync=on synchronous_commit=on" in md
    assert "durable commits" in md
    assert "pgbench: `pgbench -i -s 16 db && pgbench -b tpcb-like -c 16 db`" in md
    assert "(2,042 TPS)" in md
    assert _table(md, "Cost per transfer as the accounts grow")[1:] == [
        ["10,000", "10,000", "100.0", "1.00x", "yes"],
        ["1,000,000", "8,000", "125.0", "1.25x", "yes"],
    ]
    for name in CHARTS:
        _assert_png(tmp_path / name)


def test_the_pgbench_tps_is_drawn_across_the_throughput_panels() -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    from paycore.tools.bench.report_dir import _throughput

    fig = _throughput(plt, _postgres(), None)
    try:
        panels = fig.get_axes()
        assert [ax.get_title() for ax in panels] == [
            "throughput: in-process batches",
            "throughput: HTTP requests",
        ]
        for ax in panels:
            (line,) = [x for x in ax.get_lines() if "pgbench" in str(x.get_label())]
            assert line.get_label() == "pgbench tpcb-like 2,042 TPS"
            assert list(line.get_ydata()) == [2_042, 2_042]
        ticks = [t.get_text() for t in panels[0].get_xticklabels()]
        assert ticks == ["pg-inproc-uniform"]  # the sweep has a chart of its own
    finally:
        plt.close(fig)


def test_without_matplotlib_the_markdown_says_how_to_get_charts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report(_sqlite(), tmp_path, _quiet()[0])  # charts drawn by the previous run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    assert draw_charts(_sqlite(), None, tmp_path) is None
    console, out = _quiet()
    written = write_report(_sqlite(), tmp_path, console)
    md = (tmp_path / REPORT_MD).read_text()
    assert "Not drawn: charts need matplotlib: pip install 'paycore[bench]'." in md
    assert "![" not in md
    assert not any((tmp_path / name).exists() for name in CHARTS)  # no stale chart left
    assert "pip install 'paycore[bench]'" in out.getvalue()
    assert {p.name for p in written} == {"previous.json", REPORT_MD, REPORT_JSON}


def test_a_run_without_rows_renders() -> None:
    empty = BenchReport("paycore bench --only pgbench", {}, {}, backend="postgres")
    md = render_markdown(empty, None, charts=[])
    assert "No scenario ran." in md
    assert "no errors, not audited." in md
    assert "None: no scenario to draw." in md
    empty.audits = {"pg-inproc": True, "pg-http": False}
    assert "no errors, **audit violations**." in render_markdown(empty, None)


# -- the rate per tenth of the batches ---------------------------------------------------


def test_decile_rates_are_each_tenths_own_rate() -> None:
    # 20 batches of 100 transfers, 0.1 s apart for the first half, 0.2 s after.
    finished, t = [], 0.0
    for i in range(20):
        t += 0.1 if i < 10 else 0.2
        finished.append((t, (i + 1) * 100))
    deciles = decile_rates(finished, 0.0)
    assert deciles["transfers_at_decile"] == [200.0 * k for k in range(1, 11)]
    assert [round(r) for r in deciles["rate_per_decile"]] == [1000] * 5 + [500] * 5


# -- the command line ---------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["bench", *argv])


def test_report_is_parsed_and_in_the_command_that_reproduces_the_run(tmp_path: Path) -> None:
    args = _args("--quick", "--report", str(tmp_path / "out"))
    assert args.report == tmp_path / "out"
    assert command_line(resolve(args), args).endswith(f"--report {tmp_path / 'out'}")
    assert _args().report is None


def test_report_dir_checks(tmp_path: Path) -> None:
    check_report_dir(tmp_path)  # exists
    check_report_dir(tmp_path / "a" / "b")  # can be made
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        check_report_dir(tmp_path / "file")
    with pytest.raises(UsageError, match=r"cannot be made, .*file is not a directory"):
        check_report_dir(tmp_path / "file" / "sub")


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_a_bad_report_dir_stops_the_bench_before_it_runs(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # one line per message
    (tmp_path / "file").write_text("x")
    status = main(["bench", "--quick", "--report", str(tmp_path / where)])
    out = capsys.readouterr().out
    assert status == 2
    assert f"--report {tmp_path / where}" in out
    assert "not a directory" in out
    assert "creating accounts" not in out
    assert "reproduce" not in out


def test_json_inside_the_report_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It would be read back as the previous run: the run compared with itself."""
    monkeypatch.setenv("COLUMNS", "500")
    argv = ["bench", "--report", str(tmp_path), "--json", str(tmp_path / "report.json")]
    assert main(argv) == 2
    assert "whose files the report rewrites" in capsys.readouterr().out


def test_finish_run_writes_the_report_and_keeps_the_exit_status(tmp_path: Path) -> None:
    report = _sqlite()
    report.results[0].errors = 3
    args = argparse.Namespace(json=tmp_path / "run.json", report=tmp_path / "r", strict=False)
    console, out = _quiet()
    assert finish_run(report, args, console) == 1  # an error in a row
    md = (tmp_path / "r" / REPORT_MD).read_text()
    assert "**3 errors**, audits clean." in md
    assert re.search(r"\| inproc-uniform \| batch \|.*\| 3 \|", md)
    assert (tmp_path / "run.json").read_bytes() == (tmp_path / "r" / REPORT_JSON).read_bytes()
    assert "HTTP rate" in out.getvalue()  # finish_report printed the targets
