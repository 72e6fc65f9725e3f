"""The simulator's behaviour config: latency draws, outage windows, run-time updates, flags."""

from __future__ import annotations

import argparse
import random
import statistics

import msgspec
import pytest

from paycore.payments.processors.simulator.config import (
    Behaviour,
    Fault,
    FixedLatency,
    LognormalLatency,
    Outage,
    SimulatorConfig,
    add_arguments,
    config_from_args,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--name", "acq", *argv])


def test_fixed_latency_with_jitter_stays_in_its_range() -> None:
    """Fixed latency plus jitter is drawn from [ms, ms + jitter)."""
    rng = random.Random(1)
    draws = [FixedLatency(ms=20, jitter_ms=10).sample_ms(rng) for _ in range(1000)]
    assert min(draws) >= 20
    assert max(draws) < 30


def test_lognormal_latency_has_the_asked_percentiles() -> None:
    """A log-normal latency's median and 99th percentile are close to the asked ones."""
    rng = random.Random(2)
    latency = LognormalLatency(p50_ms=20, p99_ms=200)
    draws = sorted(latency.sample_ms(rng) for _ in range(20_000))
    assert 18 < statistics.median(draws) < 22
    assert 170 < draws[int(len(draws) * 0.99)] < 235
    capped = LognormalLatency(p50_ms=20, p99_ms=200, max_ms=50)
    assert max(capped.sample_ms(rng) for _ in range(1000)) == 50


def test_lognormal_needs_p99_above_p50() -> None:
    """A p99 below the p50 is refused."""
    with pytest.raises(msgspec.ValidationError, match="p99_ms"):
        msgspec.convert({"kind": "lognormal", "p50_ms": 50, "p99_ms": 10}, LognormalLatency)


def test_outage_windows_count_from_when_they_were_set() -> None:
    """A window [start, start + duration) from the PUT makes the simulator down, then up."""
    clock = Clock()
    behaviour = Behaviour(SimulatorConfig(), clock=clock)
    behaviour.update({"outages": [{"start": 10, "duration": 5}]})
    assert not behaviour.is_down()
    clock.now += 10
    assert behaviour.is_down()
    assert behaviour.current().outages == (Outage(start=0.0, duration=5.0),)
    clock.now += 5
    assert not behaviour.is_down()
    assert behaviour.current().outages == ()


def test_a_get_put_back_changes_nothing() -> None:
    """The config as GET shows it, PUT back later, keeps the same windows in time."""
    clock = Clock()
    behaviour = Behaviour(SimulatorConfig(outages=(Outage(start=10, duration=5),)), clock=clock)
    clock.now += 4
    shown = msgspec.to_builtins(behaviour.current())
    assert list(shown["outages"]) == [{"start": 6.0, "duration": 5.0}]
    behaviour.update(shown)
    clock.now += 6
    assert behaviour.is_down()


def test_update_merges_and_validates() -> None:
    """A PUT changes the fields it names; a bad value is refused and changes nothing."""
    behaviour = Behaviour(SimulatorConfig(error_rate=0.5), clock=Clock())
    behaviour.update({"down": True})
    assert (behaviour.config.error_rate, behaviour.config.down) == (0.5, True)
    for bad in ({"error_rate": 1.5}, {"colour": "red"}, {"latency": {"kind": "normal"}}):
        with pytest.raises(msgspec.ValidationError):
            behaviour.update(bad)
    assert behaviour.config == SimulatorConfig(error_rate=0.5, down=True)


def test_fault_draws_follow_the_rates() -> None:
    """Error and timeout rates of 1 always inject; the done ratio splits timeouts."""
    behaviour = Behaviour(SimulatorConfig(error_rate=1.0), seed=3)
    assert {behaviour.draw() for _ in range(50)} == {Fault.ERROR}
    behaviour.update({"error_rate": 0.0, "timeout_rate": 1.0, "timeout_done_ratio": 0.0})
    assert {behaviour.draw() for _ in range(50)} == {Fault.TIMEOUT_LOST}
    behaviour.update({"timeout_done_ratio": 0.5})
    assert {behaviour.draw() for _ in range(200)} == {Fault.TIMEOUT_DONE, Fault.TIMEOUT_LOST}
    behaviour.update({"timeout_rate": 0.0})
    assert {behaviour.draw() for _ in range(50)} == {Fault.NONE}


def test_flags_make_the_config() -> None:
    """Command-line flags map onto the config fields."""
    config = config_from_args(
        parse(
            "--latency-ms", "5", "--jitter-ms", "2", "--error-rate", "0.1", "--down",
            "--outage", "30:10", "--selective-card", "decline", "--outage-mode", "hang",
        )
    )  # fmt: skip
    assert config.latency == FixedLatency(ms=5, jitter_ms=2)
    assert (config.error_rate, config.down, config.selective_card) == (0.1, True, "decline")
    assert config.outages == (Outage(start=30, duration=10),)
    assert config.outage_mode == "hang"
    lognormal = config_from_args(parse("--latency-p50-ms", "10", "--latency-p99-ms", "90"))
    assert lognormal.latency == LognormalLatency(p50_ms=10, p99_ms=90)


@pytest.mark.parametrize(
    "argv",
    [("--error-rate", "2"), ("--outage", "30"), ("--latency-p50-ms", "10"), ("--jitter-ms", "-1")],
)
def test_bad_flags_are_refused(argv: tuple[str, ...]) -> None:
    """Out-of-range or incomplete flags raise instead of starting a wrong simulator."""
    with pytest.raises((ValueError, msgspec.ValidationError)):
        config_from_args(parse(*argv))
