"""What a resource service needs from its client: send a ``Call``, and walk pages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from paycore_client._call import Call, PageBody, query_of
from paycore_client._pagination import AsyncPage, Page

__all__ = ["AsyncSender", "ListCall", "Sender", "async_page", "list_call", "page"]

T = TypeVar("T")

ListCall = Callable[[str | None], Call[PageBody[T]]]


class Sender(Protocol):
    def send(self, call: Call[T]) -> T: ...


class AsyncSender(Protocol):
    async def send(self, call: Call[T]) -> T: ...


def list_call(
    route: str, decode: Callable[[bytes], PageBody[T]], params: Mapping[str, Any]
) -> tuple[ListCall[T], str | None]:
    """The GET of one page at any cursor, with ``params``' filters; and the first cursor
    (the caller's ``cursor``, if it gave one)."""
    filters = {k: v for k, v in params.items() if k != "cursor"}

    def call_for(cursor: str | None) -> Call[PageBody[T]]:
        return Call("GET", route, decode, query=query_of({**filters, "cursor": cursor}))

    return call_for, params.get("cursor")


def page(sender: Sender, call_for: ListCall[T], cursor: str | None) -> Page[T]:
    body = sender.send(call_for(cursor))
    return Page(body.data, body.next_cursor, lambda after: page(sender, call_for, after))


async def async_page(
    sender: AsyncSender, call_for: ListCall[T], cursor: str | None
) -> AsyncPage[T]:
    body = await sender.send(call_for(cursor))
    return AsyncPage(body.data, body.next_cursor, lambda after: async_page(sender, call_for, after))
