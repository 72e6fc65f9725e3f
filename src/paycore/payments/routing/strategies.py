"""The routing strategies (``RoutingStrategy``: one method, ``order``); the module
docstring of ``paycore.payments.routing`` says how each orders the processors.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol

from paycore.payments.routing.stats import ProcessorStats

__all__ = [
    "DEFAULT_EPSILON",
    "Available",
    "P2CMetric",
    "PowerOfTwoChoices",
    "Priority",
    "RoundRobin",
    "RoutingStrategy",
    "SmoothWeightedRoundRobin",
    "SuccessRate",
    "WeightedRandom",
]

Available = Callable[[str], bool]

DEFAULT_EPSILON = 0.1


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
