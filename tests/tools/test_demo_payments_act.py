"""The demo's payments act: its card scan, its cards, and its simulator processes, which
are stopped however the act ends (the whole demo runs in ``test_cli``)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from paycore.cli import main
from paycore.payments.processors.simulator import TEST_CARDS, luhn_valid
from paycore.tools.demo import payments_act
from paycore.tools.demo.payments_act import Fleet, PaymentsAct, _luhn_card, scan_for_cards


def test_scan_for_cards_finds_a_number_in_any_file_and_names_only_its_last_four(
    tmp_path: Path,
) -> None:
    """A number stored in a SQLite file (or any file below) is found; the finding shows
    the last four digits only; numbers that are not there are not reported."""
    db = sqlite3.connect(tmp_path / "shard-0.sqlite3")
    db.execute("CREATE TABLE t (note TEXT)")
    db.execute("INSERT INTO t VALUES ('paid with 4242424242424242, oops')")
    db.commit()
    db.close()
    (tmp_path / "acquirers").mkdir()
    (tmp_path / "acquirers" / "acq-a.log").write_text("last4 4444 only\n")
    files, found = scan_for_cards(tmp_path, ["4242424242424242", "5555555555554444"])
    assert files == 2
    assert found == ["shard-0.sqlite3: ****4242"]
    assert "4242424242424242" not in " ".join(found)


def test_the_extra_cards_are_valid_and_approved_by_the_simulator() -> None:
    """The act's generated numbers pass the Luhn check and are none of the simulator's
    special test cards (so every simulator approves them)."""
    rnd = random.Random(1)
    numbers = {_luhn_card(rnd) for _ in range(200)}
    assert len(numbers) == 200
    for number in numbers:
        assert len(number) == 16
        assert number.startswith("49")
        assert luhn_valid(number)
        assert number not in TEST_CARDS


@pytest.mark.slow
def test_the_simulators_are_stopped_when_the_act_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the middle of the payments act ends the demo with it, and the
    three simulator processes it started are gone."""
    fleets: list[Fleet] = []
    spawn = Fleet.spawn

    def recorded(log_dir: Path, seed: int) -> Fleet:
        fleet = spawn(log_dir, seed)
        fleets.append(fleet)
        return fleet

    async def broken(self: PaymentsAct, progress: object) -> None:
        raise RuntimeError("the act broke")

    monkeypatch.setattr(Fleet, "spawn", staticmethod(recorded))
    monkeypatch.setattr(PaymentsAct, "run", broken)
    with pytest.raises(RuntimeError, match="the act broke"):
        main(
            [
                "demo", "--data-dir", str(tmp_path / "demo"), "--wallets", "10",
                "--clients", "2", "--duration", "0.5", "--seed", "1",
            ]
        )  # fmt: skip
    (fleet,) = fleets
    assert sorted(fleet.processes) == [p.name for p in payments_act.PROCESSORS]
    assert all(p.process.poll() is not None for p in fleet.processes.values())
