"""Bounded page sizes: every listing refuses a ``limit`` outside 1..max_page_size with a
422 that names the bound, and takes the bound itself (batch sizes and body sizes are
bounded too: tests/api/test_batch.py and test_validation.py)."""

from __future__ import annotations

import pytest

from api.conftest import ClientFactory
from api.support import Api, assert_problem
from paycore.errors import ErrorCode

LISTINGS = ["/v1/accounts/w/transfers", "/v1/accounts/w/balances"]


@pytest.mark.parametrize("path", LISTINGS)
async def test_page_size_is_bounded_with_a_clear_422(open_client: ClientFactory, path: str) -> None:
    """``limit`` above ``max_page_size`` (or below 1) is 422 naming the range; the bound
    itself is served."""
    async with open_client(max_page_size=50) as client:
        await Api(client).account("w", flags={"history": True})
        for bad in (51, 0, -1, 10**30):
            body = assert_problem(
                await client.get(f"{path}?limit={bad}"), ErrorCode.INVALID_REQUEST
            )
            assert "limit" in body["detail"]
        assert "1..50" in (await client.get(f"{path}?limit=51")).json()["detail"]
        assert (await client.get(f"{path}?limit=50")).status_code == 200
