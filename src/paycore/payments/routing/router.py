"""The ``Router``: the rule that applies to a payment, its strategy's order, the decision
counted; and the feedback it takes from each call.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from paycore.payments.processors.base import Outcome, ProcessorResult
from paycore.payments.resilient import REJECTIONS
from paycore.payments.routing.config import (
    RoutingConfig,
    RoutingRule,
    StrategyName,
    rule_name,
    validate_routing,
)
from paycore.payments.routing.stats import ProcessorStats
from paycore.payments.routing.strategies import (
    DEFAULT_EPSILON,
    Available,
    P2CMetric,
    PowerOfTwoChoices,
    Priority,
    RoundRobin,
    RoutingStrategy,
    SmoothWeightedRoundRobin,
    SuccessRate,
    WeightedRandom,
)

__all__ = ["Route", "Router", "build_strategy"]


def _always(_: str) -> bool:
    return True


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
                rule_name(rule, index),
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
