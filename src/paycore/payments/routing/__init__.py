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

The modules: ``strategies`` (the orders), ``stats`` (the feedback the adaptive ones
read), ``config`` (the ``[routing]`` table and its checks), ``router`` (the ``Router``).
"""

from paycore.payments.routing.config import (
    ProcessorWeight,
    RoutingConfig,
    RoutingConfigError,
    RoutingRule,
    StrategyName,
    load_routing,
    load_routing_toml,
    validate_routing,
)
from paycore.payments.routing.router import Route, Router, build_strategy
from paycore.payments.routing.stats import ProcessorStats
from paycore.payments.routing.strategies import (
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
