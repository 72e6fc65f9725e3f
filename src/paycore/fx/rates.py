"""Where mid exchange rates come from: a small protocol and its two sources.

``StaticRates`` answers from a table (the embedded default, tests, a desk that sets its
rates by hand); ``HttpRates`` asks a rates service over HTTP. Both answer an exact
``Fraction`` (rates are parsed from decimal text, never through a float) or raise:
``fx_pair_unsupported`` (422) for a pair the source does not quote,
``fx_rate_unavailable`` (503, retryable) when the service cannot answer in time.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from paycore.config import FxConfig
from paycore.errors import ErrorCode, RequestError, UnavailableError
from paycore.fx.rounding import parse_rate
from paycore.money import is_currency

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpRates", "RateSource", "StaticRates", "parse_pair", "rate_source_for"]


@runtime_checkable
class RateSource(Protocol):
    """Mid rates: major units of ``buy`` for one major unit of ``sell``."""

    async def rate(self, sell: str, buy: str) -> Fraction: ...

    async def aclose(self) -> None: ...


def parse_pair(pair: str) -> tuple[str, str]:
    """``"USD/EUR"`` -> ``("USD", "EUR")``; ``ValueError`` for anything else."""
    sell, _, buy = pair.partition("/")
    if not (is_currency(sell) and is_currency(buy)) or sell == buy:
        raise ValueError(f"a currency pair is 'SELL/BUY' of two ISO 4217 codes, not {pair!r}")
    return sell, buy


def _unsupported(sell: str, buy: str) -> RequestError:
    return RequestError(ErrorCode.FX_PAIR_UNSUPPORTED, f"no rate is offered for {sell}/{buy}")


class StaticRates:
    """Rates from a table ``{"USD/EUR": "0.92"}``, checked when it is made."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._rates = {parse_pair(pair): parse_rate(text) for pair, text in table.items()}

    async def rate(self, sell: str, buy: str) -> Fraction:
        found = self._rates.get((sell, buy))
        if found is None:
            raise _unsupported(sell, buy)
        return found

    async def aclose(self) -> None:
        return None


class _RatesBody(msgspec.Struct):
    base: str
    # Decimal: a JSON number (or string) is read from its digits, never through a float.
    rates: dict[str, Decimal]


class HttpRates:
    """Rates from ``GET <url>/<SELL>`` answering ``{"base": "USD", "rates": {"EUR":
    "0.92"}}`` (numbers or strings), within ``timeout`` seconds.

    ``transport`` lets a test answer without a network."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        # Loaded here: a node quoting from its table (the default) never needs httpx.
        import httpx  # noqa: PLC0415

        self._httpx: ModuleType = httpx
        self._url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def rate(self, sell: str, buy: str) -> Fraction:
        try:
            response = await self._client.get(f"{self._url}/{sell}")
        except self._httpx.HTTPError as exc:
            raise _unavailable(f"{type(exc).__name__}") from None
        if response.status_code == 404:
            raise _unsupported(sell, buy)
        if response.status_code != 200:
            raise _unavailable(f"HTTP {response.status_code}")
        try:
            body = msgspec.json.decode(response.content, type=_RatesBody)
            raw = body.rates.get(buy) if body.base == sell else None
            if raw is None:
                raise _unsupported(sell, buy)
            return parse_rate(format(raw, "f"))
        except (msgspec.DecodeError, ValueError):
            raise _unavailable("an answer that is not a rates document") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _unavailable(why: str) -> UnavailableError:
    return UnavailableError(
        f"the exchange rate source did not answer: {why}", code=ErrorCode.FX_RATE_UNAVAILABLE
    )


def rate_source_for(config: FxConfig) -> RateSource:
    """The source ``[fx]`` names."""
    if config.source == "http":
        assert config.url is not None  # FxConfig checks it
        return HttpRates(config.url, timeout=config.timeout_seconds)
    return StaticRates(config.rates)
