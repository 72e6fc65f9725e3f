"""Pages of a list, and iterators that follow ``next_cursor`` to the end.

A cursor names the last item's place (creation time, then id), so a walk visits every
item once even while new ones are written; items created behind the walk's position
are not seen by it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["AsyncPage", "Page"]

T = TypeVar("T")


class _PageBase(Generic[T]):
    """What a page is without I/O: its items and where the next page starts."""

    __slots__ = ("data", "next_cursor")

    def __init__(self, data: list[T], next_cursor: str | None) -> None:
        self.data = data
        self.next_cursor = next_cursor

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.data)} items, next_cursor={self.next_cursor!r})"

    def __iter__(self) -> Iterator[T]:
        """This page's items only; ``auto_paging_iter`` walks every page."""
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


class Page(_PageBase[T]):
    """One page of a list: ``data`` and ``next_cursor`` (None on the last page)."""

    __slots__ = ("_fetch",)

    def __init__(
        self, data: list[T], next_cursor: str | None, fetch: Callable[[str], Page[T]]
    ) -> None:
        super().__init__(data, next_cursor)
        self._fetch = fetch

    def next_page(self) -> Page[T] | None:
        """The following page, fetched now; None after the last."""
        return None if self.next_cursor is None else self._fetch(self.next_cursor)

    def auto_paging_iter(self) -> Iterator[T]:
        """Every item from this page on, fetching each next page as it is reached."""
        page: Page[T] | None = self
        while page is not None:
            yield from page.data
            page = page.next_page()


class AsyncPage(_PageBase[T]):
    """``Page`` for ``AsyncPaycore``: ``await page.next_page()``, ``async for``."""

    __slots__ = ("_fetch",)

    def __init__(
        self,
        data: list[T],
        next_cursor: str | None,
        fetch: Callable[[str], Awaitable[AsyncPage[T]]],
    ) -> None:
        super().__init__(data, next_cursor)
        self._fetch = fetch

    async def next_page(self) -> AsyncPage[T] | None:
        return None if self.next_cursor is None else await self._fetch(self.next_cursor)

    async def auto_paging_iter(self) -> AsyncIterator[T]:
        """Every item from this page on: ``async for item in page.auto_paging_iter()``."""
        page: AsyncPage[T] | None = self
        while page is not None:
            for item in page.data:
                yield item
            page = await page.next_page()
