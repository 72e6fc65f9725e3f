"""The simulator's behaviour: latency, injected errors and timeouts, outages.

``SimulatorConfig`` is set at start (command-line flags, ``add_arguments``) and changed
at run time through ``PUT /admin/config``, which takes any subset of its fields (the
others keep their values; ``latency`` and ``outages`` are replaced as a whole). Outage
windows are seconds from *now*: from the start for flags, from the PUT for the admin
endpoint; ``GET /admin/config`` shows them from the moment of the GET (a window in
progress starts at 0, past ones are gone), so a GET's body PUT back changes nothing.

``Behaviour`` applies a config to each request: is the simulator down now, how long to
wait, and whether to inject a definite error or a timeout (``Fault``).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "Behaviour",
    "Fault",
    "FixedLatency",
    "LognormalLatency",
    "Outage",
    "SimulatorConfig",
    "add_arguments",
    "config_from_args",
]

Rate = Annotated[float, Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, Meta(ge=0.0, le=600_000.0)]
Seconds = Annotated[float, Meta(ge=0.0, le=86_400.0)]
_Z99: Final = 2.3263478740408408  # the standard normal's 99th percentile


class FixedLatency(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="fixed", tag_field="kind"
):
    """``ms`` plus a uniform jitter in ``[0, jitter_ms)``."""

    ms: Millis = 0.0
    jitter_ms: Millis = 0.0

    def sample_ms(self, rng: random.Random) -> float:
        return self.ms + (rng.random() * self.jitter_ms if self.jitter_ms else 0.0)


class LognormalLatency(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="lognormal", tag_field="kind"
):
    """A log-normal distribution with the given median and 99th percentile, capped."""

    p50_ms: Annotated[float, Meta(gt=0.0, le=600_000.0)]
    p99_ms: Annotated[float, Meta(gt=0.0, le=600_000.0)]
    max_ms: Millis = 10_000.0

    def __post_init__(self) -> None:
        if self.p99_ms < self.p50_ms:
            raise ValueError("p99_ms must be at least p50_ms")

    def sample_ms(self, rng: random.Random) -> float:
        sigma = (math.log(self.p99_ms) - math.log(self.p50_ms)) / _Z99
        return min(self.max_ms, rng.lognormvariate(math.log(self.p50_ms), sigma))


class Outage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    start: Seconds  # from when the config was applied
    duration: Annotated[float, Meta(gt=0.0, le=86_400.0)]


class SimulatorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    latency: FixedLatency | LognormalLatency = msgspec.field(default_factory=FixedLatency)
    # Share of requests answered 503 after the latency, before anything is done.
    error_rate: Rate = 0.0
    # Share of requests that hang for ``hang_seconds`` (a client sees a read timeout) ...
    timeout_rate: Rate = 0.0
    # ... and, of those, the share whose operation IS done before the hang (the rest
    # are never done: a status lookup says not_found).
    timeout_done_ratio: Rate = 1.0
    # How long a hang lasts: longer than any client's read timeout.
    hang_seconds: Seconds = 60.0
    # Down (now, or in an outage window): every processor endpoint answers 503 at once
    # with ``Connection: close`` ("error"), or hangs and then answers 503 ("hang"),
    # doing nothing either way. /admin and /healthz keep working.
    down: bool = False
    outages: tuple[Outage, ...] = ()
    outage_mode: Literal["error", "hang"] = "error"
    # What this simulator does with the selective test card (4000 0000 0000 3337), so
    # that a test can have a card that fails here and succeeds on the others.
    selective_card: Literal["approve", "error", "decline", "timeout"] = "approve"


class Fault(StrEnum):
    NONE = "none"
    ERROR = "error"  # 503 after the latency, nothing done
    TIMEOUT_DONE = "timeout_done"  # done, then the answer hangs
    TIMEOUT_LOST = "timeout_lost"  # hangs, nothing done


class Behaviour:
    """The current config, applied at ``clock`` (monotonic seconds)."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not secrets
        self.config = config
        self._applied_at = clock()

    def current(self) -> SimulatorConfig:
        """The config with its outage windows counted from now."""
        elapsed = self._clock() - self._applied_at
        windows = []
        for window in self.config.outages:
            start, end = window.start - elapsed, window.start + window.duration - elapsed
            if end > 0:
                windows.append(Outage(start=max(0.0, start), duration=end - max(0.0, start)))
        return msgspec.structs.replace(self.config, outages=tuple(windows))

    def update(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply ``changes`` (a subset of the fields; raises ``msgspec.ValidationError``)."""
        merged = msgspec.to_builtins(self.current()) | dict(changes)
        config = msgspec.convert(merged, SimulatorConfig)
        self.config, self._applied_at = config, self._clock()
        return self.current()

    def is_down(self) -> bool:
        if self.config.down:
            return True
        elapsed = self._clock() - self._applied_at
        return any(w.start <= elapsed < w.start + w.duration for w in self.config.outages)

    def latency_seconds(self) -> float:
        return self.config.latency.sample_ms(self._rng) / 1000.0

    def draw(self) -> Fault:
        config = self.config
        if config.error_rate and self._rng.random() < config.error_rate:
            return Fault.ERROR
        if config.timeout_rate and self._rng.random() < config.timeout_rate:
            if self._rng.random() < config.timeout_done_ratio:
                return Fault.TIMEOUT_DONE
            return Fault.TIMEOUT_LOST
        return Fault.NONE


# -- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``paycore acquirer-sim`` options (kept free of the web framework's import)."""
    parser.add_argument("--name", required=True, help="the processor's name (in every answer)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port; 0 picks a free one (printed at start)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency (0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="plus uniform [0, J) (0)")
    parser.add_argument(
        "--latency-p50-ms", type=float, help="log-normal latency: median (with --latency-p99-ms)"
    )
    parser.add_argument("--latency-p99-ms", type=float, help="log-normal latency: 99th pct")
    parser.add_argument("--latency-max-ms", type=float, default=10_000.0, help="its cap")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share that hang")
    parser.add_argument(
        "--timeout-done-ratio", type=float, default=1.0, help="share of hangs done first (1)"
    )
    parser.add_argument("--hang-seconds", type=float, default=60.0, help="a hang's length (60)")
    parser.add_argument("--down", action="store_true", help="start down (503 on every call)")
    parser.add_argument(
        "--outage",
        action="append",
        default=[],
        metavar="START:DURATION",
        help="an outage window, seconds from start (repeatable)",
    )
    parser.add_argument(
        "--outage-mode",
        choices=["error", "hang"],
        default="error",
        help="a call while down: error (503 at once, the default) or hang (then 503)",
    )
    parser.add_argument(
        "--selective-card",
        choices=["approve", "error", "decline", "timeout"],
        default="approve",
        help="what this simulator does with the selective test card (approve)",
    )
    parser.add_argument("--seed", type=int, help="seed of the fault and latency draws")
    parser.add_argument("--log-level", default="info", help="log level (info)")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The config the flags describe; raises ``ValueError`` (or msgspec's) on bad ones."""
    latency: dict[str, Any]
    if args.latency_p50_ms is not None or args.latency_p99_ms is not None:
        latency = {
            "kind": "lognormal",
            "p50_ms": args.latency_p50_ms,
            "p99_ms": args.latency_p99_ms,
            "max_ms": args.latency_max_ms,
        }
    else:
        latency = {"kind": "fixed", "ms": args.latency_ms, "jitter_ms": args.jitter_ms}
    outages = []
    for text in args.outage:
        start, sep, duration = text.partition(":")
        if not sep:
            raise ValueError(f"--outage takes START:DURATION in seconds, not {text!r}")
        outages.append({"start": float(start), "duration": float(duration)})
    return msgspec.convert(
        {
            "latency": latency,
            "error_rate": args.error_rate,
            "timeout_rate": args.timeout_rate,
            "timeout_done_ratio": args.timeout_done_ratio,
            "hang_seconds": args.hang_seconds,
            "down": args.down,
            "outages": outages,
            "outage_mode": args.outage_mode,
            "selective_card": args.selective_card,
        },
        SimulatorConfig,
    )
