"""The command line says what it does: every command and sub-command has a description for
its ``--help``, every option and argument a help text, and each help says what the code
does (``cluster drill --kind`` named "three" drills of four). ``cluster down`` says when
there was nothing to stop, and never deletes or signals what is not its cluster's."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from paycore.cli import _parser, main
from paycore.tools.local_cluster.layout import ClusterLayout
from paycore.tools.local_cluster.runtime import start_time
from paycore.tools.local_cluster.spec import ClusterSpec, PortPlan


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("paycore",)
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


def _undocumented() -> list[str]:
    missing = []
    for path, parser in _parsers(_parser()):
        if not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_option_has_help() -> None:
    """Was: serve and audit without a description, audit --max-violations, the cluster
    sub-commands, cluster tools' action, acquirer-sim --outage-mode and bench --seed
    without a word."""
    assert _undocumented() == []


def _cluster_parser(name: str) -> argparse.ArgumentParser:
    parsers = dict(_parsers(_parser()))
    return parsers[("paycore", "cluster", name)]


def test_the_drill_kinds_help_names_each_choice_and_the_default() -> None:
    (kind,) = [a for a in _cluster_parser("drill")._actions if "--kind" in a.option_strings]
    assert kind.help is not None
    assert kind.choices is not None
    assert "three" not in kind.help
    for choice in kind.choices:
        assert choice in kind.help
    assert "default: primary, api-node and redis" in kind.help


@pytest.mark.parametrize("value", ["-1", "many"])
def test_audit_refuses_a_negative_or_non_numeric_max_violations(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit", "--max-violations", value])
    assert exited.value.code == 2
    assert "whole number >= 0" in capsys.readouterr().err


# -- cluster down -----------------------------------------------------------------------


def _cluster_dir(root: Path, state: dict[str, object] | None) -> ClusterLayout:
    """The files ``cluster up`` leaves in ``root`` (nothing runs from them)."""
    layout = ClusterLayout(root.resolve())
    root.mkdir(parents=True)
    spec = ClusterSpec(data_dir=str(root))
    layout.spec_file.write_bytes(msgspec.json.encode(spec))
    layout.ports_file.write_bytes(msgspec.json.encode(PortPlan.from_base(spec, 30000)))
    if state is not None:
        layout.state_file.write_bytes(msgspec.json.encode(state))
    return layout


def _said(text: str) -> str:
    """What the console printed, as one line (rich wraps long lines)."""
    return " ".join(text.split())


def _dead_pid() -> int:
    """A pid no process has now (the state of a supervisor gone since)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(pid_max - 1, 1, -1) if not Path(f"/proc/{p}").exists())


def test_down_without_a_cluster_says_so_and_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: "cluster stopped", exit 0; and --purge deleted any directory it was given."""
    precious = tmp_path / "not-a-cluster"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    for extra in ([], ["--purge"]):
        assert main(["cluster", "down", "--data-dir", str(precious), *extra]) == 2
        err = _said(capsys.readouterr().err)
        assert "no cluster in" in err
        assert "nothing stopped or deleted" in err
    assert (precious / "keep.txt").read_text() == "mine"
    missing = tmp_path / "nothing-here"
    assert main(["cluster", "down", "--data-dir", str(missing)]) == 2
    assert not missing.exists()


def test_down_of_a_stopped_cluster_says_nothing_was_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cluster"
    layout = _cluster_dir(root, {"supervisor_pid": _dead_pid(), "status": "stopped"})
    assert main(["cluster", "down", "--data-dir", str(root)]) == 1
    captured = capsys.readouterr()
    assert "no cluster running in" in _said(captured.err)
    assert "stopped" not in captured.out
    assert layout.exists()
    assert main(["cluster", "down", "--data-dir", str(root), "--purge"]) == 0
    out = _said(capsys.readouterr().out)
    assert "no cluster was running" in out
    assert "its data deleted" in out
    assert not root.exists()


def test_down_does_not_signal_a_process_that_reused_the_supervisor_s_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state file older than the process now holding its pid (a reboot, a long pause):
    the recorded start time tells them apart, so the stranger is left alone."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        started = start_time(stranger.pid)
        assert started is not None
        state = {
            "supervisor_pid": stranger.pid,
            "supervisor_start_time": started - 1,
            "status": "running",
        }
        root = tmp_path / "cluster"
        _cluster_dir(root, state)
        assert main(["cluster", "down", "--data-dir", str(root)]) == 1
        time.sleep(0.2)
        assert stranger.poll() is None  # still running: not signalled
        assert "no cluster running" in _said(capsys.readouterr().err)
    finally:
        stranger.kill()
        stranger.wait()
    assert os.path.exists(root)
