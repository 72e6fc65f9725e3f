"""Settings from a partial config table: what the table leaves out keeps the caller's defaults.

``msgspec.convert({"breaker": {"window_size": 10}}, Config)`` builds the nested
``BreakerConfig`` from its class defaults (resilience4j's: ``minimum_calls = 100``...),
not from the defaults ``Config`` gives that field, so one key in a table silently
resets every other key of it. ``with_defaults`` merges the table over a complete
default value first, key by key at every depth, and only then converts (and validates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

__all__ = ["with_defaults"]

S = TypeVar("S", bound=msgspec.Struct)


def with_defaults(defaults: S, table: Mapping[str, Any]) -> S:
    """``table`` over ``defaults``, converted to ``defaults``' type.

    Nested tables merge key by key (a key they leave out keeps the default's value);
    any other value, lists included, replaces the default. Errors are msgspec's
    (``msgspec.ValidationError`` naming the path, or the struct's own ``ValueError``).
    """
    merged = _merge(msgspec.to_builtins(defaults), table)
    return msgspec.convert(merged, type(defaults))


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over
