"""The ``[routing]`` table: its rules and their validation (``load_routing``)."""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from paycore.payments.routing.strategies import P2CMetric

__all__ = [
    "ProcessorWeight",
    "RoutingConfig",
    "RoutingConfigError",
    "RoutingRule",
    "StrategyName",
    "load_routing",
    "load_routing_toml",
    "rule_name",
    "validate_routing",
]


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


def rule_name(rule: RoutingRule, index: int | None) -> str:
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
