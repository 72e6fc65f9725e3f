"""Jepsen-style verification: a recorded workload, a nemesis, a checker (``paycore chaos``).

``history`` (what each client sent and got), ``workload`` (the clients), ``nemesis``
(faults as data, a seeded schedule, the ``ClusterControl`` protocol), ``tcpproxy`` (the
network faults), ``local`` (a small cluster on this machine), ``checker`` (pure checks over
history and final state), ``report`` (summary, JSON, timeline), ``run`` (all of it).
"""
