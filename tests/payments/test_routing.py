"""Routing: each strategy's order and distribution, the feedback, the config and its rules."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from paycore.payments.processors.base import Operation, Outcome, ProcessorResult
from paycore.payments.routing import (
    Available,
    P2CMetric,
    PowerOfTwoChoices,
    Priority,
    ProcessorStats,
    RoundRobin,
    Router,
    RoutingConfig,
    RoutingConfigError,
    RoutingRule,
    RoutingStrategy,
    SmoothWeightedRoundRobin,
    StrategyName,
    SuccessRate,
    WeightedRandom,
    load_routing,
    load_routing_toml,
)

N = 20_000


def everyone(_: str) -> bool:
    return True


def without(*down: str) -> Available:
    return lambda name: name not in down


def firsts(strategy: RoutingStrategy, picks: int, available: Available = everyone) -> Counter[str]:
    """How often each processor was the first choice over ``picks`` routes."""
    counts: Counter[str] = Counter()
    for _ in range(picks):
        counts[strategy.order(available)[0]] += 1
    return counts


# -- deterministic strategies ------------------------------------------------------------


def test_priority_keeps_the_configured_order_and_skips_the_unavailable() -> None:
    """priority: the list as configured, minus processors whose breaker is open."""
    strategy = Priority(["a", "b", "c"])
    assert strategy.order(everyone) == ["a", "b", "c"]
    assert strategy.order(without("a")) == ["b", "c"]
    assert strategy.order(without("a", "b", "c")) == []


def test_round_robin_rotates_over_the_available() -> None:
    """round_robin: the first choice moves one along each pick; fallbacks follow the ring."""
    strategy = RoundRobin(["a", "b", "c"])
    assert [strategy.order(everyone) for _ in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    counts = firsts(strategy, 1000, without("b"))
    assert counts == {"a": 500, "c": 500}


def test_smooth_weighted_round_robin_is_nginx_sequence() -> None:
    """Weights 5,1,1 give nginx's smooth sequence a a b a c a a, cycle after cycle."""
    strategy = SmoothWeightedRoundRobin([("a", 5), ("b", 1), ("c", 1)])
    picks = [strategy.order(everyone)[0] for _ in range(14)]
    assert "".join(picks) == "aabacaa" * 2


def test_smooth_weighted_round_robin_fallbacks_by_weight_skipping_the_unavailable() -> None:
    """After the pick come the others by descending weight; a down processor is skipped
    and the rest share the traffic by their weights."""
    strategy = SmoothWeightedRoundRobin([("a", 1), ("b", 3), ("c", 2)])
    assert strategy.order(everyone) == ["b", "c", "a"]
    counts = firsts(strategy, 400, without("b"))
    assert counts in ({"c": 267, "a": 133}, {"c": 266, "a": 134})
    assert strategy.order(without("a", "b", "c")) == []


@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=6))
def test_smooth_weighted_round_robin_gives_each_its_exact_share_per_cycle(
    weights: list[int],
) -> None:
    """Over any sum(weights) picks from the start, each processor is first exactly weight
    times, and the sequence repeats cycle after cycle."""
    names = [f"p{i}" for i in range(len(weights))]
    strategy = SmoothWeightedRoundRobin(list(zip(names, weights, strict=True)))
    total = sum(weights)
    cycles = [[strategy.order(everyone)[0] for _ in range(total)] for _ in range(3)]
    assert Counter(cycles[0]) == dict(zip(names, weights, strict=True))
    assert cycles[0] == cycles[1] == cycles[2]


# -- random strategies -------------------------------------------------------------------


def test_weighted_random_follows_the_weights() -> None:
    """weighted_random: the first choice is a with probability 3/4 for weights 3:1."""
    strategy = WeightedRandom([("a", 3), ("b", 1)], random.Random(7))
    counts = firsts(strategy, N)
    assert counts["a"] / N == pytest.approx(0.75, abs=0.015)


def test_weighted_random_same_seed_same_picks() -> None:
    """Two strategies with the same seed make the same orders."""
    one = WeightedRandom([("a", 2), ("b", 1), ("c", 1)], random.Random(11))
    two = WeightedRandom([("a", 2), ("b", 1), ("c", 1)], random.Random(11))
    assert [one.order(everyone) for _ in range(200)] == [two.order(everyone) for _ in range(200)]


def test_weighted_random_fallbacks_are_drawn_without_replacement() -> None:
    """The second choice is drawn from the rest by weight: for 2,1,1 after a, b or c evenly."""
    strategy = WeightedRandom([("a", 2), ("b", 1), ("c", 1)], random.Random(3))
    seconds: Counter[str] = Counter()
    for _ in range(N):
        order = strategy.order(everyone)
        assert sorted(order) == ["a", "b", "c"]
        if order[0] == "a":
            seconds[order[1]] += 1
    assert seconds["b"] / (seconds["b"] + seconds["c"]) == pytest.approx(0.5, abs=0.02)


def test_power_of_two_choices_prefers_the_less_loaded() -> None:
    """With in-flight counts a=9, b=1, c=0 the busiest is never first, and of two
    candidates the idler one always leads."""
    stats = ProcessorStats()
    for name, count in (("a", 9), ("b", 1)):
        for _ in range(count):
            stats.begin(name)
    strategy = PowerOfTwoChoices(["a", "b", "c"], stats, random.Random(5))
    counts = firsts(strategy, 3000)
    assert counts["a"] == 0
    # c wins whenever drawn (2 pairs of 3), b only against a (1 pair of 3)
    assert counts["c"] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert PowerOfTwoChoices(["a", "b"], stats, random.Random(1)).order(everyone) == ["b", "a"]
    assert strategy.order(without("b", "c")) == ["a"]


def test_power_of_two_choices_on_latency_uses_the_ewma() -> None:
    """metric=latency: the lower EWMA leads; a processor never measured counts as fastest."""
    stats = ProcessorStats(alpha=0.5)
    stats.record("a", Outcome.APPROVED, 0.200)
    stats.record("a", Outcome.APPROVED, 0.100)
    assert stats.latency("a") == pytest.approx(0.150)
    stats.record("b", Outcome.APPROVED, 0.120)
    strategy = PowerOfTwoChoices(["a", "b"], stats, random.Random(2), P2CMetric.LATENCY)
    assert {tuple(strategy.order(everyone)) for _ in range(50)} == {("b", "a")}
    fresh = PowerOfTwoChoices(["a", "b", "new"], stats, random.Random(2), P2CMetric.LATENCY)
    assert firsts(fresh, 300)["a"] == 0


def test_success_rate_sends_most_traffic_to_the_best_with_some_exploration() -> None:
    """epsilon-greedy: the best processor is first (1 - eps) + eps/k of the time."""
    stats = ProcessorStats(window=100)
    for i in range(100):
        stats.record("good", Outcome.APPROVED if i % 10 else Outcome.DECLINED, 0.1)
        stats.record("bad", Outcome.APPROVED if i % 2 else Outcome.FAILED, 0.1)
    strategy = SuccessRate(["bad", "good"], stats, random.Random(9), epsilon=0.1)
    counts = firsts(strategy, N)
    assert counts["good"] / N == pytest.approx(0.95, abs=0.01)
    greedy = SuccessRate(["bad", "good"], stats, random.Random(9), epsilon=0.0)
    assert firsts(greedy, 100) == {"good": 100}


def test_success_rate_follows_the_sliding_window() -> None:
    """Old approvals slide out of the window: a processor that went bad loses the lead."""
    stats = ProcessorStats(window=10)
    for _ in range(10):
        stats.record("a", Outcome.APPROVED, 0.1)
        stats.record("b", Outcome.APPROVED if _ % 2 else Outcome.DECLINED, 0.1)
    strategy = SuccessRate(["a", "b"], stats, random.Random(1), epsilon=0.0)
    assert strategy.order(everyone) == ["a", "b"]
    for _ in range(10):
        stats.record("a", Outcome.FAILED, 0.1)
    assert stats.success("a") == (0, 10)
    assert strategy.order(everyone) == ["b", "a"]
    assert stats.success_estimate("never-seen") == 0.5


@given(
    down=st.sets(st.sampled_from(["a", "b", "c", "d"])),
    strategy_name=st.sampled_from(list(StrategyName)),
    seed=st.integers(0, 1000),
)
def test_every_strategy_orders_exactly_the_available_processors(
    down: set[str], strategy_name: StrategyName, seed: int
) -> None:
    """Whatever the strategy and the breakers, a route is a permutation of the available."""
    weighted = strategy_name in (
        StrategyName.WEIGHTED_ROUND_ROBIN,
        StrategyName.WEIGHTED_RANDOM,
    )
    processors = [{"name": n, "weight": i + 1} if weighted else n for i, n in enumerate("abcd")]
    config = load_routing(
        {"seed": seed, "default": {"strategy": strategy_name.value, "processors": processors}}
    )
    router = Router(config, available=lambda n: n not in down, registry=CollectorRegistry())
    for _ in range(5):
        route = router.route(currency="EUR")
        assert sorted(route.candidates) == sorted(set("abcd") - down)
        assert route.first == (route.candidates[0] if route.candidates else None)


# -- feedback ----------------------------------------------------------------------------


def test_in_flight_is_counted_for_the_block_and_ends_only_what_began() -> None:
    """Router.in_flight counts a call while it runs; ending more than began is a bug."""
    router = Router(
        RoutingConfig(default=RoutingRule(StrategyName.PRIORITY, ("a",))),
        registry=CollectorRegistry(),
    )
    seen = []

    def fail_inside() -> None:
        with router.in_flight("a"):
            seen.append(router.stats.in_flight("a"))
            raise ConnectionError

    with router.in_flight("a"):
        seen.append(router.stats.in_flight("a"))
        with pytest.raises(ConnectionError):
            fail_inside()
    assert seen == [1, 2]
    assert router.stats.in_flight("a") == 0
    with pytest.raises(RuntimeError, match="no call in flight"):
        router.stats.end("a")


def test_record_result_skips_rejections_that_never_reached_the_processor() -> None:
    """circuit_open and bulkhead_full results say nothing about the processor's rate."""
    router = Router(
        RoutingConfig(default=RoutingRule(StrategyName.SUCCESS_RATE, ("a",))),
        registry=CollectorRegistry(),
    )

    def result(outcome: Outcome, error: str | None = None) -> ProcessorResult:
        return ProcessorResult(outcome, "a", Operation.AUTHORIZE, "r1", error=error, latency_ms=40)

    router.record_result(result(Outcome.FAILED, "circuit_open"))
    router.record_result(result(Outcome.FAILED, "bulkhead_full"))
    assert router.stats.success("a") == (0, 0)
    router.record_result(result(Outcome.APPROVED))
    router.record("a", Outcome.AMBIGUOUS, 0.2)
    assert router.stats.success("a") == (1, 2)
    assert router.stats.latency("a") == pytest.approx(0.3 * 0.2 + 0.7 * 0.04)


# -- configuration -----------------------------------------------------------------------

CONFIG = """
[routing]
seed = 42

[routing.default]
strategy = "priority"
processors = ["acq-c", "acq-a"]

[[routing.rules]]
merchant = "m1"
currency = "EUR"
brand = "visa"
strategy = "weighted_round_robin"
processors = [{name = "acq-a", weight = 3}, {name = "acq-b", weight = 1}]

[[routing.rules]]
name = "m1-any"
merchant = "m1"
strategy = "round_robin"
processors = ["acq-b", "acq-c"]

[[routing.rules]]
currency = "EUR"
brand = "visa"
strategy = "success_rate"
epsilon = 0.05
processors = ["acq-a", "acq-b", "acq-c"]

[[routing.rules]]
merchant = "m2"
brand = "mastercard"
strategy = "priority"
processors = ["acq-b"]

[[routing.rules]]
merchant = "m2"
currency = "USD"
strategy = "priority"
processors = ["acq-a"]

[[routing.rules]]
brand = "amex"
strategy = "power_of_two_choices"
metric = "latency"
processors = ["acq-a", "acq-c"]
"""


def _router(text: str = CONFIG) -> Router:
    config = load_routing_toml(text, known={"acq-a", "acq-b", "acq-c"})
    return Router(config, registry=CollectorRegistry())


@pytest.mark.parametrize(
    ("merchant", "currency", "brand", "rule"),
    [
        ("m1", "EUR", "visa", "rules[0]"),  # all three keys
        ("m1", "eur", "VISA", "rules[0]"),  # currency and brand ignore case
        ("m1", "USD", "visa", "m1-any"),  # merchant alone beats nothing
        ("m1", None, None, "m1-any"),
        ("m9", "EUR", "visa", "rules[2]"),  # currency + brand
        ("m2", "USD", "mastercard", "rules[4]"),  # two keys each: merchant+currency wins
        ("m2", "EUR", "mastercard", "rules[3]"),
        ("m9", "EUR", "amex", "rules[5]"),
        ("m9", "GBP", "visa", "default"),
        (None, None, None, "default"),
    ],
)
def test_the_most_specific_matching_rule_wins(
    merchant: str | None, currency: str | None, brand: str | None, rule: str
) -> None:
    """More keys named wins; between equals merchant > currency > brand; else the default."""
    router = _router()
    _, name = router.rule_for(merchant=merchant, currency=currency, brand=brand)
    assert name == rule
    assert router.route(merchant=merchant, currency=currency, brand=brand).rule == rule


def test_a_loaded_config_routes_with_its_strategy() -> None:
    """The TOML example's rules build their strategies: 3:1 smooth weighted for m1/EUR/visa."""
    router = _router()
    picks = [router.route(merchant="m1", currency="EUR", brand="visa") for _ in range(8)]
    assert {p.strategy for p in picks} == {StrategyName.WEIGHTED_ROUND_ROBIN}
    assert [p.first for p in picks] == ["acq-a", "acq-a", "acq-b", "acq-a"] * 2
    route = router.route(merchant="m9", currency="GBP", available=without("acq-c"))
    assert (route.candidates, route.skipped) == (("acq-a",), ("acq-c",))
    assert router.route(brand="amex", available=without("acq-a", "acq-c")).candidates == ()


def test_routes_are_reproducible_per_seed_and_rules_do_not_disturb_each_other() -> None:
    """Same seed, same picks; traffic on one rule does not change another rule's draws."""
    text = """
[routing]
seed = 1
[routing.default]
strategy = "weighted_random"
processors = [{name = "a", weight = 1}, {name = "b", weight = 1}]
[[routing.rules]]
currency = "EUR"
strategy = "weighted_random"
processors = [{name = "a", weight = 1}, {name = "b", weight = 1}]
"""
    one, two = _router_of(text), _router_of(text)
    for _ in range(30):
        two.route(currency="EUR")  # only the second router routes EUR payments
    assert [one.route().candidates for _ in range(50)] == [
        two.route().candidates for _ in range(50)
    ]
    other_seed = Router(load_routing_toml(text), seed=2, registry=CollectorRegistry())
    assert [other_seed.route().candidates for _ in range(50)] != [
        _router_of(text).route().candidates for _ in range(50)
    ]


def _router_of(text: str) -> Router:
    return Router(load_routing_toml(text), registry=CollectorRegistry())


def test_decisions_are_counted_in_metrics() -> None:
    """Each route() counts its rule, strategy and first choice ('none' when empty)."""
    registry = CollectorRegistry()
    router = Router(load_routing_toml(CONFIG), registry=registry)
    router.route(merchant="m1")
    router.route(merchant="m1")
    router.route(brand="amex", available=without("acq-a", "acq-c"))
    value = registry.get_sample_value
    labels = {"rule": "m1-any", "strategy": "round_robin"}
    assert value("paycore_routing_decisions_total", {**labels, "processor": "acq-b"}) == 1
    assert value("paycore_routing_decisions_total", {**labels, "processor": "acq-c"}) == 1
    none = {"rule": "rules[5]", "strategy": "power_of_two_choices", "processor": "none"}
    assert value("paycore_routing_decisions_total", none) == 1


DEFAULT = '[routing.default]\nstrategy = "priority"\nprocessors = ["a"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[routing]\nseed = 1\n", "missing required field `default`"),
        (
            '[routing.default]\nstrategy = "fastest"\nprocessors = ["a"]\n',
            "routing.default.strategy",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nprocessors = []\n',
            "routing.default.processors",
        ),
        (
            '[routing.default]\nstrategy = "weighted_random"\n'
            'processors = [{name = "a", weight = 0}]\n',
            "routing.default.processors[0].weight",
        ),
        (DEFAULT + "colour = 1\n", "unknown field `colour`"),
        (
            DEFAULT
            + '[[routing.rules]]\ncurrency = "euro"\nstrategy = "priority"\nprocessors = ["a"]\n',
            "routing.rules[0].currency",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nmerchant = "m1"\nprocessors = ["a"]\n',
            "routing.default matches every payment",
        ),
        (
            DEFAULT + '[[routing.rules]]\nstrategy = "priority"\nprocessors = ["a"]\n',
            "routing.rules[0] names no merchant, currency or brand",
        ),
        (
            DEFAULT
            + '[[routing.rules]]\nbrand = "visa"\nstrategy = "priority"\nprocessors = ["a"]\n'
            + '[[routing.rules]]\nbrand = "VISA"\nstrategy = "round_robin"\nprocessors = ["a"]\n',
            "routing.rules[1] matches the same payments as routing.rules[0]",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nprocessors = ["a", "b", "a"]\n',
            "processor 'a' is listed twice",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nprocessors = [{name = "a", weight = 2}]\n',
            "strategy priority takes no weights",
        ),
        (
            '[routing.default]\nstrategy = "round_robin"\nepsilon = 0.2\nprocessors = ["a"]\n',
            "epsilon is an option of success_rate only",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nmetric = "latency"\nprocessors = ["a"]\n',
            "metric is an option of power_of_two_choices only",
        ),
        (
            '[routing.default]\nstrategy = "success_rate"\nepsilon = 1.5\nprocessors = ["a"]\n',
            "routing.default.epsilon",
        ),
        (
            '[routing.default]\nstrategy = "priority"\nprocessors = ["zz"]\n',
            "unknown processor 'zz'",
        ),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_error(text: str, message: str) -> None:
    """Each mistake is a RoutingConfigError that names the place (routing.*) and the problem."""
    if not text.startswith("[routing]"):
        text = "[routing]\n" + text
    with pytest.raises(RoutingConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_routing_toml(text, known={"a", "b"})


def test_a_document_without_routing_or_with_bad_toml_is_refused() -> None:
    """No [routing] table, or text that is not TOML, is a RoutingConfigError."""
    with pytest.raises(RoutingConfigError, match="no \\[routing\\] table"):
        load_routing_toml("[server]\nport = 1\n")
    with pytest.raises(RoutingConfigError, match="invalid TOML"):
        load_routing_toml("[routing\n")
