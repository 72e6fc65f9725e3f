"""Routing: which processors a payment is offered to, and in which order.

::

    [routing] table --load_routing()--> RoutingConfig --Router(config)--> Router
    Router.route(merchant=, currency=, brand=)
      1. the rule: the most specific [[routing.rules]] that matches, else [routing.default]
      2. its strategy: order(available) -> [first choice, fallback, fallback, ...]
         processors whose breaker refuses calls (available(name) is False) are skipped
      -> Route(rule, strategy, candidates)
    Router.record(name, outcome, latency), Router.in_flight(name): feedback

The strategies (``RoutingStrategy``: one method, ``order``)::

    priority               the configured order
    round_robin            rotates the first choice over the available processors
    weighted_round_robin   nginx's smooth weighted round robin: every pick adds each
                           weight to its current value, picks the largest, subtracts
                           the total from it; weights 5,1,1 give a a b a c a a
    weighted_random        drawn by weight without replacement (seeded)
    power_of_two_choices   two drawn at random, the less loaded first: fewer calls in
                           flight (metric "in_flight"), or lower EWMA latency ("latency")
    success_rate           epsilon-greedy on the approval rate over a sliding window of
                           each processor's last calls: an ``epsilon`` share of picks
                           explores (random order), the rest go best-first

Fallbacks after the first choice: the rotation order (round robin), descending weight
(smooth weighted), further draws (weighted random), ascending load (power of two), the
estimate (success rate). An empty list means no processor is available.

Everything random comes from a ``random.Random`` seeded per rule from the config's
``seed`` (or the Router's), so a run is reproducible; with no seed it is random.

Which rule wins: rules name ``merchant``, ``currency`` and/or ``brand`` (at least one);
the matching rule naming the most of them wins; between two naming as many, merchant
outranks currency, which outranks brand. Two rules naming the same values are an error.
``merchant`` is the merchant account's id as the store keeps it: ``<tenant>/<id>`` for
an account of a tenant other than ``default`` (see ``paycore.ledger.tenancy``).

A TOML example (the ``[routing]`` table of the config file)::

    [routing]
    seed = 42

    [routing.default]
    strategy = "priority"
    processors = ["acq-a", "acq-b", "acq-c"]

    [[routing.rules]]
    merchant = "m1"
    currency = "EUR"
    brand = "visa"
    strategy = "weighted_round_robin"
    processors = [{name = "acq-a", weight = 3}, {name = "acq-b", weight = 1}]

Feedback: the success-rate and latency statistics are per processor, shared by every
rule (a processor's health does not depend on which rule sent the call). Record only
calls that reached the processor: ``record_result`` skips ``circuit_open`` and
``bulkhead_full`` rejections, which say nothing about it.
"""

from __future__ import annotations

import random
import tomllib
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Protocol

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from paycore.payments.processors.base import Outcome, ProcessorResult
from paycore.payments.resilient import REJECTIONS

__all__ = [
    "Available",
    "P2CMetric",
    "PowerOfTwoChoices",
    "Priority",
    "ProcessorStats",
    "ProcessorWeight",
    "RoundRobin",
    "Route",
    "Router",
    "RoutingConfig",
    "RoutingConfigError",
    "RoutingRule",
    "RoutingStrategy",
    "SmoothWeightedRoundRobin",
    "StrategyName",
    "SuccessRate",
    "WeightedRandom",
    "build_strategy",
    "load_routing",
    "load_routing_toml",
    "validate_routing",
]

Available = Callable[[str], bool]

DEFAULT_EPSILON = 0.1


def _always(_: str) -> bool:
    return True


# -- statistics --------------------------------------------------------------------------


class ProcessorStats:
    """Per processor: calls in flight, an EWMA of latency, and the last ``window``
    outcomes (approved or not) for the success rate."""

    def __init__(self, *, window: int = 100, alpha: float = 0.3) -> None:
        if window < 1:
            raise ValueError("the success window needs at least 1 call")
        if not 0 < alpha <= 1:
            raise ValueError("latency_alpha must be above 0 and at most 1")
        self.window = window
        self.alpha = alpha
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._outcomes: dict[str, deque[bool]] = {}
        self._approved: dict[str, int] = {}

    def in_flight(self, name: str) -> int:
        return self._in_flight.get(name, 0)

    def latency(self, name: str) -> float | None:
        """The EWMA of the latency in seconds, None before the first call."""
        return self._latency.get(name)

    def success(self, name: str) -> tuple[int, int]:
        """(approved, calls) over the window."""
        outcomes = self._outcomes.get(name)
        return (self._approved.get(name, 0), len(outcomes)) if outcomes else (0, 0)

    def success_estimate(self, name: str) -> float:
        """The approval rate with a uniform prior, (approved + 1) / (calls + 2): 0.5 for a
        processor never tried, so a newcomer is neither favoured nor starved."""
        approved, calls = self.success(name)
        return (approved + 1) / (calls + 2)

    def begin(self, name: str) -> None:
        self._in_flight[name] = self._in_flight.get(name, 0) + 1

    def end(self, name: str) -> None:
        count = self._in_flight.get(name, 0)
        if count <= 0:
            raise RuntimeError(f"processor {name!r} has no call in flight to end")
        self._in_flight[name] = count - 1

    def record(self, name: str, outcome: Outcome, latency: float) -> None:
        """One call's outcome and latency (seconds)."""
        previous = self._latency.get(name)
        self._latency[name] = (
            latency if previous is None else self.alpha * latency + (1 - self.alpha) * previous
        )
        outcomes = self._outcomes.setdefault(name, deque())
        approved = outcome is Outcome.APPROVED
        if len(outcomes) == self.window:
            self._approved[name] -= outcomes.popleft()
        outcomes.append(approved)
        self._approved[name] = self._approved.get(name, 0) + approved


# -- strategies --------------------------------------------------------------------------


class RoutingStrategy(Protocol):
    """Orders the processors of one rule for one payment: first choice, then fallbacks."""

    def order(self, available: Available) -> list[str]: ...


class Priority:
    """The configured order, unavailable processors skipped."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def order(self, available: Available) -> list[str]:
        return [name for name in self.names if available(name)]


class RoundRobin:
    """Each pick starts one further along the available processors."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._next = 0

    def order(self, available: Available) -> list[str]:
        peers = [name for name in self.names if available(name)]
        if not peers:
            return []
        start = self._next % len(peers)
        self._next += 1
        return peers[start:] + peers[:start]


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin over the available processors (see the
    module docstring); over any ``sum(weights)`` consecutive picks with the same
    processors available, each is picked exactly ``weight`` times, evenly spread."""

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        self.weights = tuple(weights)
        self._weight = dict(self.weights)
        self._current = dict.fromkeys(self._weight, 0)

    def order(self, available: Available) -> list[str]:
        peers = [name for name, _ in self.weights if available(name)]
        if not peers:
            return []
        total = 0
        best = peers[0]
        for name in peers:
            self._current[name] += self._weight[name]
            total += self._weight[name]
            if self._current[name] > self._current[best]:
                best = name
        self._current[best] -= total
        rest = sorted((n for n in peers if n != best), key=lambda n: -self._weight[n])
        return [best, *rest]


class WeightedRandom:
    """Drawn by weight without replacement: the first with probability weight/total."""

    def __init__(self, weights: Sequence[tuple[str, int]], rng: random.Random) -> None:
        self.weights = tuple(weights)
        self._rng = rng

    def order(self, available: Available) -> list[str]:
        peers = [(name, weight) for name, weight in self.weights if available(name)]
        ordered = []
        while peers:
            point = self._rng.random() * sum(weight for _, weight in peers)
            for index, (name, weight) in enumerate(peers):
                point -= weight
                if point < 0 or index == len(peers) - 1:
                    ordered.append(name)
                    del peers[index]
                    break
        return ordered


class P2CMetric(StrEnum):
    IN_FLIGHT = "in_flight"
    LATENCY = "latency"


class PowerOfTwoChoices:
    """Two processors drawn at random, the less loaded first; the rest by load.
    A processor with no latency yet counts as the fastest, so it gets measured."""

    def __init__(
        self,
        names: Sequence[str],
        stats: ProcessorStats,
        rng: random.Random,
        metric: P2CMetric = P2CMetric.IN_FLIGHT,
    ) -> None:
        self.names = tuple(names)
        self.metric = metric
        self._stats = stats
        self._rng = rng

    def load(self, name: str) -> float:
        if self.metric is P2CMetric.IN_FLIGHT:
            return self._stats.in_flight(name)
        return self._stats.latency(name) or 0.0

    def order(self, available: Available) -> list[str]:
        peers = [name for name in self.names if available(name)]
        if len(peers) < 2:
            return peers
        a, b = self._rng.sample(peers, 2)
        first, second = (b, a) if self.load(b) < self.load(a) else (a, b)
        rest = sorted((n for n in peers if n not in (a, b)), key=self.load)
        return [first, second, *rest]


class SuccessRate:
    """Epsilon-greedy on each processor's approval rate: with probability ``epsilon``
    a random order (exploration), otherwise best estimate first."""

    def __init__(
        self,
        names: Sequence[str],
        stats: ProcessorStats,
        rng: random.Random,
        epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        if not 0 <= epsilon <= 1:
            raise ValueError("epsilon must be between 0 and 1")
        self.names = tuple(names)
        self.epsilon = epsilon
        self._stats = stats
        self._rng = rng

    def order(self, available: Available) -> list[str]:
        peers = [name for name in self.names if available(name)]
        if self._rng.random() < self.epsilon:
            self._rng.shuffle(peers)
            return peers
        return sorted(peers, key=lambda n: -self._stats.success_estimate(n))


# -- configuration -----------------------------------------------------------------------


class StrategyName(StrEnum):
    PRIORITY = "priority"
    ROUND_ROBIN = "round_robin"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    WEIGHTED_RANDOM = "weighted_random"
    POWER_OF_TWO_CHOICES = "power_of_two_choices"
    SUCCESS_RATE = "success_rate"


_WEIGHTED = frozenset({StrategyName.WEIGHTED_ROUND_ROBIN, StrategyName.WEIGHTED_RANDOM})
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# A merchant account as the store keeps it: its id, or "<tenant>/<id>" for an account of a
# tenant other than "default" (paycore.ledger.tenancy).
_Merchant = Annotated[str, msgspec.Meta(min_length=1, max_length=129)]


class ProcessorWeight(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A processor of a rule; ``weight`` only for the weighted strategies (default 1)."""

    name: _Name
    weight: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None


class RoutingRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[routing.rules]]`` table (or ``[routing.default]``, which matches nothing
    in particular). Processors are names or ``{name, weight}`` tables."""

    strategy: StrategyName
    processors: Annotated[tuple[ProcessorWeight | _Name, ...], msgspec.Meta(min_length=1)]
    name: str | None = None
    merchant: _Merchant | None = None
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] | None = None
    brand: _Name | None = None
    epsilon: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None  # success_rate
    metric: P2CMetric | None = None  # power_of_two_choices; default in_flight

    @property
    def members(self) -> tuple[tuple[str, int], ...]:
        """(name, weight) of each processor, in the configured order."""
        return tuple(
            (p, 1) if isinstance(p, str) else (p.name, p.weight or 1) for p in self.processors
        )

    @property
    def specificity(self) -> tuple[int, int]:
        """How specific the rule is: keys named, then merchant > currency > brand."""
        keys = (self.merchant is not None, self.currency is not None, self.brand is not None)
        return (sum(keys), 4 * keys[0] + 2 * keys[1] + keys[2])

    def matches(self, merchant: str | None, currency: str | None, brand: str | None) -> bool:
        """Whether a payment with these attributes falls under the rule (currency and brand
        compare case-insensitively)."""
        if self.merchant is not None and self.merchant != merchant:
            return False
        if self.currency is not None and (currency is None or self.currency != currency.upper()):
            return False
        return self.brand is None or (brand is not None and self.brand.lower() == brand.lower())


class RoutingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``[routing]`` table: a default rule, specific rules, the seed and statistics."""

    default: RoutingRule
    rules: tuple[RoutingRule, ...] = ()
    seed: int | None = None
    success_window: Annotated[int, msgspec.Meta(ge=1)] = 100  # calls per processor
    latency_alpha: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.3  # EWMA weight of a call


class RoutingConfigError(ValueError):
    """The ``[routing]`` table is not valid; the message names the place and the fix."""


def _where(index: int | None) -> str:
    return "routing.default" if index is None else f"routing.rules[{index}]"


def _rule_name(rule: RoutingRule, index: int | None) -> str:
    return rule.name or ("default" if index is None else f"rules[{index}]")


def validate_routing(config: RoutingConfig, known: Collection[str] | None = None) -> None:
    """Raise ``RoutingConfigError`` for what msgspec's types cannot see; ``known``: the
    processors that exist (every name a rule uses must be one of them)."""
    default = config.default
    if (default.merchant, default.currency, default.brand) != (None, None, None):
        raise RoutingConfigError(
            "routing.default matches every payment: it takes no merchant, currency or brand "
            "(put a specific rule in [[routing.rules]])"
        )
    seen: dict[tuple[str | None, str | None, str | None], int] = {}
    for index, rule in enumerate(config.rules):
        key = (rule.merchant, rule.currency, rule.brand and rule.brand.lower())
        if key == (None, None, None):
            raise RoutingConfigError(
                f"{_where(index)} names no merchant, currency or brand, so it matches every "
                "payment: that rule is [routing.default]"
            )
        if key in seen:
            raise RoutingConfigError(
                f"{_where(index)} matches the same payments as {_where(seen[key])}"
            )
        seen[key] = index
    every: list[tuple[int | None, RoutingRule]] = [(None, config.default)]
    every.extend(enumerate(config.rules))
    for place, rule in every:
        where = _where(place)
        names = [name for name, _ in rule.members]
        for name in names:
            if names.count(name) > 1:
                raise RoutingConfigError(f"{where}: processor {name!r} is listed twice")
            if known is not None and name not in known:
                raise RoutingConfigError(
                    f"{where}: unknown processor {name!r} (known: {', '.join(sorted(known))})"
                )
        if rule.strategy not in _WEIGHTED and any(
            isinstance(p, ProcessorWeight) and p.weight is not None for p in rule.processors
        ):
            raise RoutingConfigError(
                f"{where}: strategy {rule.strategy} takes no weights (only "
                "weighted_round_robin and weighted_random do)"
            )
        if rule.epsilon is not None and rule.strategy is not StrategyName.SUCCESS_RATE:
            raise RoutingConfigError(f"{where}: epsilon is an option of success_rate only")
        if rule.metric is not None and rule.strategy is not StrategyName.POWER_OF_TWO_CHOICES:
            raise RoutingConfigError(f"{where}: metric is an option of power_of_two_choices only")


def load_routing(table: Mapping[str, Any], known: Collection[str] | None = None) -> RoutingConfig:
    """The ``[routing]`` table as a validated ``RoutingConfig`` (``RoutingConfigError``)."""
    try:
        config = msgspec.convert(table, RoutingConfig)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`routing.").replace("`$`", "`routing`")
        if " - at `" not in message:
            message += " - at `routing`"
        if message.endswith(".strategy`"):
            message += f" (strategies: {', '.join(StrategyName)})"
        raise RoutingConfigError(f"invalid [routing] table: {message}") from None
    validate_routing(config, known)
    return config


def load_routing_toml(text: str, known: Collection[str] | None = None) -> RoutingConfig:
    """The ``[routing]`` table of a TOML document."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingConfigError(f"invalid TOML: {exc}") from None
    if "routing" not in document:
        raise RoutingConfigError("no [routing] table")
    return load_routing(document["routing"], known)


# -- the router --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """A routing decision: the rule that applied, its strategy, the ordered candidates."""

    rule: str
    strategy: StrategyName
    candidates: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # the rule's processors left out as unavailable

    @property
    def first(self) -> str | None:
        return self.candidates[0] if self.candidates else None


def build_strategy(rule: RoutingRule, stats: ProcessorStats, rng: random.Random) -> RoutingStrategy:
    """The strategy object a rule describes."""
    members = rule.members
    names = [name for name, _ in members]
    match rule.strategy:
        case StrategyName.PRIORITY:
            return Priority(names)
        case StrategyName.ROUND_ROBIN:
            return RoundRobin(names)
        case StrategyName.WEIGHTED_ROUND_ROBIN:
            return SmoothWeightedRoundRobin(members)
        case StrategyName.WEIGHTED_RANDOM:
            return WeightedRandom(members, rng)
        case StrategyName.POWER_OF_TWO_CHOICES:
            return PowerOfTwoChoices(names, stats, rng, rule.metric or P2CMetric.IN_FLIGHT)
        case StrategyName.SUCCESS_RATE:
            return SuccessRate(
                names, stats, rng, DEFAULT_EPSILON if rule.epsilon is None else rule.epsilon
            )


class _RoutingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "paycore_routing_decisions",
            "Routing decisions by rule, strategy and first choice ('none': no processor)",
            ["rule", "strategy", "processor"],
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _RoutingMetrics] = (
    weakref.WeakKeyDictionary()
)


class Router:
    """Routes payments by ``config`` (see the module docstring).

    ``available(name)`` says whether a processor takes calls now (its breaker; see
    ``resilient.availability``); ``seed`` overrides the config's; ``stats`` may be
    shared between routers; decisions are counted on ``registry`` (default: global).
    """

    def __init__(
        self,
        config: RoutingConfig,
        *,
        available: Available = _always,
        seed: int | None = None,
        stats: ProcessorStats | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        validate_routing(config)
        self.config = config
        self.available = available
        self.stats = stats or ProcessorStats(
            window=config.success_window, alpha=config.latency_alpha
        )
        rule_seed = config.seed if seed is None else seed
        indexed: list[tuple[int | None, RoutingRule]] = [*enumerate(config.rules)]
        indexed.sort(key=lambda item: item[1].specificity, reverse=True)
        indexed.append((None, config.default))
        self._rules = [
            (
                rule,
                _rule_name(rule, index),
                build_strategy(rule, self.stats, _rng(rule_seed, index)),
            )
            for index, rule in indexed
        ]
        target = REGISTRY if registry is None else registry
        metrics = _METRICS.get(target)
        if metrics is None:
            metrics = _METRICS[target] = _RoutingMetrics(target)
        self._metrics = metrics

    def rule_for(
        self, *, merchant: str | None = None, currency: str | None = None, brand: str | None = None
    ) -> tuple[RoutingRule, str]:
        """The rule that applies (and its name): the most specific match, else the default."""
        for rule, name, _ in self._rules:
            if rule.matches(merchant, currency, brand):
                return rule, name
        raise AssertionError("unreachable: the default rule matches everything")

    def route(
        self,
        *,
        merchant: str | None = None,
        currency: str | None = None,
        brand: str | None = None,
        available: Available | None = None,
    ) -> Route:
        """The ordered candidates for one payment (empty: no processor available)."""
        for rule, name, strategy in self._rules:
            if rule.matches(merchant, currency, brand):
                candidates = tuple(strategy.order(available or self.available))
                first = candidates[0] if candidates else "none"
                self._metrics.decisions.labels(name, rule.strategy.value, first).inc()
                skipped = tuple(n for n, _ in rule.members if n not in candidates)
                return Route(name, rule.strategy, candidates, skipped)
        raise AssertionError("unreachable: the default rule matches everything")

    def record(self, name: str, outcome: Outcome, latency: float) -> None:
        """Feedback for the adaptive strategies: one call's outcome and latency (seconds)."""
        self.stats.record(name, outcome, latency)

    def record_result(self, result: ProcessorResult) -> None:
        """``record`` from a connector's result; rejections that never reached the
        processor (circuit_open, bulkhead_full) are not recorded."""
        if result.error in REJECTIONS:
            return
        self.stats.record(result.processor, result.outcome, result.latency_ms / 1000.0)

    @contextmanager
    def in_flight(self, name: str) -> Iterator[None]:
        """Count a call to ``name`` as in flight for the block (power of two choices)."""
        self.stats.begin(name)
        try:
            yield
        finally:
            self.stats.end(name)


def _rng(seed: int | None, index: int | None) -> random.Random:
    """One generator per rule, so a rule's picks do not depend on other rules' traffic."""
    if seed is None:
        return random.Random()  # noqa: S311 - load spreading, not cryptography
    return random.Random(f"{seed}/{'default' if index is None else index}")  # noqa: S311
