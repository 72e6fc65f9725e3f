"""Rate sources: the static table and the HTTP source (against a real local server),
each answering exact rates or a precise error; and the ``[fx]`` settings."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from paycore.config import FxConfig, load_settings
from paycore.errors import ErrorCode, PaycoreError, UnavailableError
from paycore.fx.rates import HttpRates, StaticRates, rate_source_for

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/USD": (200, b'{"base": "USD", "rates": {"EUR": "0.92", "JPY": 151.123456789012345}}'),
    "/EUR": (200, b'{"base": "EUR", "rates": {}}'),
    "/GBP": (500, b"oops"),
    "/CHF": (200, b"not json"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ANSWERS.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet: the test reads answers, not logs."""


@pytest.fixture
def rates_url() -> Iterator[str]:
    """A rates service on a free local port, in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_the_static_table_answers_exact_rates_and_refuses_other_pairs() -> None:
    """A pair of the table gets its exact rate; any other pair fx_pair_unsupported."""
    source = StaticRates({"USD/EUR": "0.92"})
    assert await source.rate("USD", "EUR") == Fraction(92, 100)
    with pytest.raises(PaycoreError) as raised:
        await source.rate("EUR", "USD")
    assert raised.value.code is ErrorCode.FX_PAIR_UNSUPPORTED


@pytest.mark.parametrize(
    "table", [{"USD/EUR": "0.9e1"}, {"USD/EUR": "-1"}, {"USDEUR": "1"}, {"USD/USD": "1"}]
)
def test_a_bad_table_is_refused_when_it_is_made(table: dict[str, str]) -> None:
    """Rates in exponent form, non-positive rates and malformed pairs never load."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        StaticRates(table)


async def test_the_http_source_reads_rates_as_exact_decimals(rates_url: str) -> None:
    """Strings and JSON numbers alike are read from their digits, never through a float."""
    source = HttpRates(rates_url, timeout=2)
    try:
        assert await source.rate("USD", "EUR") == Fraction("0.92")
        assert await source.rate("USD", "JPY") == Fraction("151.123456789012345")
    finally:
        await source.aclose()


@pytest.mark.parametrize(
    ("sell", "buy", "code"),
    [
        ("EUR", "USD", ErrorCode.FX_PAIR_UNSUPPORTED),  # not in the answer
        ("SEK", "USD", ErrorCode.FX_PAIR_UNSUPPORTED),  # 404
        ("GBP", "USD", ErrorCode.FX_RATE_UNAVAILABLE),  # 500
        ("CHF", "USD", ErrorCode.FX_RATE_UNAVAILABLE),  # not a rates document
    ],
)
async def test_the_http_source_maps_every_failure_to_a_stable_code(
    rates_url: str, sell: str, buy: str, code: ErrorCode
) -> None:
    """Unquoted pairs are 422 fx_pair_unsupported; a failing service is a retryable 503."""
    source = HttpRates(rates_url, timeout=2)
    try:
        with pytest.raises(PaycoreError) as raised:
            await source.rate(sell, buy)
    finally:
        await source.aclose()
    assert raised.value.code is code
    assert isinstance(raised.value, UnavailableError) == (code is ErrorCode.FX_RATE_UNAVAILABLE)


async def test_a_silent_rates_service_times_out_as_unavailable() -> None:
    """A service that accepts the connection and never answers costs one timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        source = HttpRates(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.2)
        try:
            with pytest.raises(UnavailableError) as raised:
                await source.rate("USD", "EUR")
        finally:
            await source.aclose()
    assert raised.value.code is ErrorCode.FX_RATE_UNAVAILABLE
    assert raised.value.retryable


def test_the_fx_settings_come_from_the_toml_file(tmp_path: Path) -> None:
    """``[fx]`` sets the source, the table, the quote lifetime and spreads per pair."""
    path = tmp_path / "paycore.toml"
    path.write_text(
        '[fx]\nquote_ttl_seconds = 10\nspread_bps = 20\n[fx.rates]\n"USD/EUR" = "0.9"\n'
        '[fx.spreads]\n"USD/EUR" = 5\n'
    )
    fx = load_settings(path, env={}).fx
    assert (fx.quote_ttl_seconds, fx.spread_bps, fx.spreads) == (10, 20, {"USD/EUR": 5})
    assert isinstance(rate_source_for(fx), StaticRates)
    assert isinstance(rate_source_for(FxConfig(source="http", url="http://x")), HttpRates)
    with pytest.raises(ValueError, match=r"fx\.url"):
        FxConfig(source="http")
    assert json.dumps(FxConfig().rates)  # the embedded default table is plain strings
