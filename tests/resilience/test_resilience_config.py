"""A ``[processors.resilience]`` table that gives some keys keeps paycore's documented
defaults for the others, at every depth (it used to take the bare ``BreakerConfig``
defaults for a partial ``breaker`` table: ``minimum_calls = 100``, a breaker that never
opens in a short outage); the documented table is the code's defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from paycore.config import load_settings
from paycore.payments.processors.base import Operation
from paycore.payments.resilient import ResilienceConfig, ResilientConnector
from paycore.payments.service import build_payment_service
from paycore.resilience import (
    BreakerConfig,
    RetryConfig,
    State,
    Verdict,
    WindowType,
    with_defaults,
)
from paycore.storage.sqlite import SQLiteStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "payments.md"
DEFAULTS = ResilienceConfig()


def test_a_partial_table_keeps_the_other_defaults_at_every_depth() -> None:
    loaded = ResilienceConfig.from_table(
        {"timeout": 3, "breaker": {"window_size": 10}, "retry": {"attempts": 4}}
    )
    assert loaded.timeout == 3
    assert loaded.breaker == msgspec.structs.replace(DEFAULTS.breaker, window_size=10)
    assert loaded.breaker.minimum_calls == 10  # paycore's, not BreakerConfig's 100
    assert loaded.retry == msgspec.structs.replace(DEFAULTS.retry, attempts=4)
    assert loaded.bulkhead == DEFAULTS.bulkhead
    assert loaded.retry_operations == DEFAULTS.retry_operations
    assert ResilienceConfig.from_table({}) == DEFAULTS


def test_values_given_replace_the_defaults_and_are_still_checked() -> None:
    loaded = ResilienceConfig.from_table(
        {
            "operation_timeouts": {"status": 1.5},
            "retry_operations": ["status"],
            "breaker": {"window_type": "time_based", "minimum_calls": 5},
        }
    )
    assert loaded.timeout_for(Operation.STATUS) == 1.5
    assert loaded.timeout_for(Operation.REFUND) == DEFAULTS.timeout
    assert loaded.retry_operations == {Operation.STATUS}  # a list replaces, never merges
    assert loaded.breaker.window_type is WindowType.TIME_BASED
    assert loaded.breaker.window_size == DEFAULTS.breaker.window_size
    with pytest.raises(msgspec.ValidationError, match=r"minimum_calls"):
        ResilienceConfig.from_table({"breaker": {"minimum_calls": 0}})
    with pytest.raises(
        msgspec.ValidationError, match=r"unknown field `windw_size` - at `\$\.breaker`"
    ):
        ResilienceConfig.from_table({"breaker": {"windw_size": 5}})
    with pytest.raises(msgspec.ValidationError, match=r"Expected `object`.*\$\.breaker"):
        ResilienceConfig.from_table({"breaker": 5})
    with pytest.raises(ValueError, match="timeout"):
        ResilienceConfig.from_table({"timeout": 0})


def test_with_defaults_is_generic() -> None:
    """The helper merges over any struct's values, not over its class's defaults."""
    base = RetryConfig(attempts=5, deadline=None, wait_max=2.0)
    assert with_defaults(base, {"wait_max": 3}) == RetryConfig(
        attempts=5, deadline=None, wait_max=3.0
    )


async def test_a_short_outage_opens_a_breaker_configured_by_a_partial_table(
    tmp_path: Path,
) -> None:
    """The node's config file gives one breaker key; ten failures open the breaker."""
    config = tmp_path / "paycore.toml"
    config.write_text(
        '[[processors]]\nname = "acq-a"\nurl = "http://127.0.0.1:9"\n'
        "[processors.resilience.breaker]\nwait_in_open = 30.0\n"
    )
    settings = load_settings(config, env={})
    store = SQLiteStore(tmp_path / "shard-0.sqlite3")
    service = build_payment_service(store, settings)
    try:
        connector = service.connectors["acq-a"]
        assert isinstance(connector, ResilientConnector)
        assert connector.config.breaker == msgspec.structs.replace(
            DEFAULTS.breaker, wait_in_open=30.0
        )
        breaker = connector.breaker
        for _ in range(DEFAULTS.breaker.minimum_calls):
            breaker.record(breaker.acquire(), Verdict.FAILURE, 0.01)
        assert breaker.state is State.OPEN
    finally:
        await service.aclose()


def _documented() -> dict[str, str]:
    """``key -> default`` from the table in docs/payments.md's resilience section."""
    text = DOC.read_text()
    section = text[text.index("## Processor resilience") :]
    section = section[: section.index("\n## ", 1)]
    return dict(re.findall(r"^\| `([a-z_.]+)` \| ([^|]+?) \|", section, re.MULTILINE))


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    """``{"breaker": {"window_size": 20}}`` as ``{"breaker.window_size": 20}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key != "operation_timeouts":
            out.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            out[key] = value
    return out


def test_the_documented_defaults_are_the_code_s() -> None:
    documented = _documented()
    actual = _flatten(msgspec.to_builtins(DEFAULTS))
    assert set(documented) == set(actual)
    for key, value in actual.items():
        shown = documented[key]
        if key == "retry_operations":
            assert set(value) == {op.value for op in Operation}
            assert shown == "all six operations"
        elif value is None:
            assert shown == "unset", key
        elif isinstance(value, str):
            assert shown == f'`"{value}"`', key
        elif isinstance(value, dict):
            assert value == {}, key
            assert shown == "`{}`", key
        else:
            assert shown == f"`{value!r}`", key
    assert BreakerConfig().minimum_calls == 100  # the bare default the merge keeps out
