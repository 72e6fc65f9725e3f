"""The matching tolerance per processor comes from the settings (``[reconciliation]``), and
two imports of one processor's reports never interleave (its import lock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from config_files import write_config
from paycore.config import ReconciliationConfig, Settings, load_settings
from paycore.locks import LocalLockService
from paycore.payments.processors.simulator.settlement import SettlementAnomalies
from paycore.reconciliation import (
    ReconciliationError,
    drift,
    import_lock_name,
    import_report,
    list_exceptions,
    rules_for,
)
from reconciliation.support import PROCESSOR, Shop, assert_ledger_clean, balances, open_shop

# Every line's gross off ours by 1..100 minor units (the simulator's amount_difference).
ALL_DIFFER = SettlementAnomalies(seed=5, amount_difference=1.0)


def test_the_tolerances_are_read_from_the_settings_file(tmp_path: Path) -> None:
    """``[reconciliation.tolerances]`` per processor (0 for one not named), as the cluster
    tests' settings writer renders it; a key that is no processor name is refused."""
    path = tmp_path / "paycore.toml"
    path.write_text("[reconciliation]\ngrace_days = 2\n\n[reconciliation.tolerances]\nsim-a = 5\n")
    settings = load_settings(path, env={})
    assert rules_for(settings.reconciliation, "sim-a").tolerance == 5
    assert rules_for(settings.reconciliation, "sim-b").tolerance == 0
    assert rules_for(settings.reconciliation, "sim-b").grace_days == 2
    assert Settings().reconciliation.tolerance("sim-a") == 0

    written = Settings(reconciliation=ReconciliationConfig(tolerances={"sim-a": 7, "b_2": 0}))
    assert load_settings(write_config(tmp_path / "w.toml", written), env={}) == written

    path.write_text('[reconciliation.tolerances]\n"no:such" = 1\n')
    with pytest.raises(ValueError, match="not a processor name"):
        load_settings(path, env={})
    path.write_text("[reconciliation.tolerances]\nsim-a = -1\n")
    with pytest.raises(msgspec.ValidationError):
        load_settings(path, env={})


async def _trade(shop: Shop, n: int = 12) -> None:
    for i in range(n):
        await shop.pay(1000 + 3 * i, merchant=f"shop-{1 + i % 4}")


async def test_lines_within_the_processors_tolerance_match(tmp_path: Path) -> None:
    """With no tolerance every differing line is an amount_mismatch; with the processor's
    tolerance of 100 from the settings they all match, the differences booked to fees,
    and the psp: account owes nothing more (drift 0)."""
    async with open_shop(tmp_path / "strict") as shop:
        await _trade(shop)
        text = shop.report(shop.today, ALL_DIFFER)
        strict = await import_report(shop.store, PROCESSOR, text)
        assert strict.matched == 0
        assert strict.exceptions == {"amount_mismatch": 12}
    async with open_shop(tmp_path / "tolerant") as shop:
        await _trade(shop)
        config = ReconciliationConfig(tolerances={PROCESSOR: 100})
        text = shop.report(shop.today, ALL_DIFFER)
        tolerant = await import_report(
            shop.store, PROCESSOR, text, rules=rules_for(config, PROCESSOR)
        )
        assert (tolerant.matched, tolerant.exceptions) == (12, {})
        assert [(d.drift, d.unsettled) for d in await drift(shop.store)] == [(0, 0)]
        await assert_ledger_clean(shop.store)


def _renamed(text: str, batch: str, other: str) -> str:
    """The same report under another batch id (a processor that sent its day twice)."""
    return text.replace(f",{batch},", f",{other},")


async def test_two_imports_of_one_processor_at_once_do_not_interleave(tmp_path: Path) -> None:
    """Two reports settling the same captures, imported at the same moment: one matches
    them, the other finds them settled (duplicate_line); each capture leaves the psp:
    account once, so the drift stays zero. Without the lock both would read "nothing
    settled yet" and book the captures twice."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop)
        first = shop.report(shop.today)
        batch = first.splitlines()[1].split(",")[1]
        second = _renamed(first, batch, batch + "-again")
        locks = LocalLockService()
        results = await asyncio.gather(
            import_report(shop.store, PROCESSOR, first, locks=locks),
            import_report(shop.store, PROCESSOR, second, locks=locks),
        )
        assert sorted(r.matched for r in results) == [0, 12]
        assert sorted(sum(r.exceptions.values()) for r in results) == [0, 12]
        queued = await list_exceptions(shop.store, PROCESSOR)
        assert {e.reason for e in queued} == {"duplicate_line"}
        assert [d.drift for d in await drift(shop.store)] == [0]
        await assert_ledger_clean(shop.store)


async def test_an_import_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    """While another holds the processor's import lock, an import waits ``lock_wait``
    and is then refused (import_in_progress) having changed nothing; another
    processor's lock does not stop it."""
    async with open_shop(tmp_path) as shop:
        await _trade(shop, 4)
        text = shop.report(shop.today)
        locks = LocalLockService()
        before = await balances(shop.store)
        async with locks.hold(import_lock_name(PROCESSOR), 30.0):
            with pytest.raises(ReconciliationError) as caught:
                await import_report(shop.store, PROCESSOR, text, locks=locks, lock_wait=0.2)
            assert caught.value.code == "import_in_progress"
            assert await balances(shop.store) == before
        async with locks.hold(import_lock_name("sim-other"), 30.0):
            done = await import_report(shop.store, PROCESSOR, text, locks=locks, lock_wait=0.2)
        assert done.matched == 4


def test_the_command_line_takes_the_lock_of_its_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """paycore reconcile holds the import lock in the settings' lock service: one that
    cannot be reached refuses the import (exit 1, lock_unavailable) having booked
    nothing; the settings' tolerance applies (a differing line matches)."""
    from paycore.cli import main
    from paycore.locks.testing import free_port

    async def trade() -> str:
        async with open_shop(tmp_path, shards=4) as shop:
            await _trade(shop, 4)
            return shop.report(shop.today, ALL_DIFFER)

    report = tmp_path / "report.csv"
    report.write_text(asyncio.run(trade()))
    data_dir = tmp_path / "data"
    config = tmp_path / "paycore.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\nlocks_url = "redis://127.0.0.1:{free_port()}/0"\n'
        f"[reconciliation.tolerances]\n{PROCESSOR} = 100\n"
    )
    args = ["reconcile", "--processor", PROCESSOR, "--report", str(report)]
    assert main([*args, "--config", str(config)]) == 1
    assert "lock_unavailable" in capsys.readouterr().err
    config.write_text(f'data_dir = "{data_dir}"\n[reconciliation.tolerances]\n{PROCESSOR} = 100\n')
    assert main([*args, "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"matched": 4' in out
    assert '"exceptions": {}' in out
