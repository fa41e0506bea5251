"""The part of the :class:`broker.ports.Adapter` port that every backend implements alike.

An adapter may subclass :class:`BaseAdapter` (as an httpx transport subclasses its base
transport): it then gets the masked :attr:`~BaseAdapter.url` and the ``subscribe`` entry point,
and implements :meth:`~BaseAdapter.open_subscription` with the arguments already checked.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from broker.ports import Subscription
from broker.urls import mask_url

__all__ = ["BaseAdapter"]


class BaseAdapter(abc.ABC):
    """Shared behaviour of the adapters; the rest of the port is the backend's own."""

    def __init__(self, url: str) -> None:
        self._shown_url = mask_url(url)

    @property
    def url(self) -> str:
        """The URL this adapter was built from, secrets masked."""
        return self._shown_url

    async def subscribe(
        self,
        topics: Sequence[str],
        group: str,
        *,
        from_beginning: bool = False,
        prefetch: int = 100,
    ) -> Subscription:
        """Join ``group`` on ``topics``; returns once the group's position exists."""
        return await self.open_subscription(tuple(topics), group, from_beginning, max(1, prefetch))

    @abc.abstractmethod
    async def open_subscription(
        self, topics: tuple[str, ...], group: str, from_beginning: bool, prefetch: int
    ) -> Subscription:
        """:meth:`subscribe` with at least one unit of ``prefetch``."""
