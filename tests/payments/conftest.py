"""Fixtures of the payments tests: simulated acquirers in real processes (``fix_acquirer``)."""

from __future__ import annotations

from payments.fix_acquirer import acquirer, acquirer_pool

__all__ = ["acquirer", "acquirer_pool"]
