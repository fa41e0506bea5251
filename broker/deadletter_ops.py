"""Dead-letter operations: list, group, replay and purge the dead letters a broker holds.

:mod:`broker.deadletter` holds the rules, with no I/O: what a dead letter looks like, how its
topic is named, which dead letters a :class:`~broker.deadletter.DeadLetterSelection` chooses.
This module applies them to a broker: :class:`DeadLetterOps` works on an adapter (its
``browse``, ``publish``, ``purge``, optional ``purge_chosen`` and its capabilities) under a
:class:`~broker.policies.DeadLetter` policy. Users and the CLI call the :class:`broker.Bus`
methods (``bus.dead_letters``, ``bus.replay``, ``bus.purge`` ...), which delegate here.

    ops = DeadLetterOps(bus.adapter, bus.policy.dead_letter)
    replayed = await ops.replay("orders.dlq", where=DeadLetterSelection(type="order.placed"))
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from broker import deadletter
from broker.deadletter import DeadLetterGroup, DeadLetterSelection
from broker.envelope import Event
from broker.errors import ConfigurationError, TopicNotFoundError
from broker.policies import DeadLetter
from broker.ports import Adapter, TopicInfo, chosen_purger
from broker.reply import is_reply_topic

__all__ = ["DeadLetterOps"]

#: What "every dead letter" means to a read of a DLQ.
_EVERY = 1_000_000

#: The dead letters named by id (None: no id given), and a selection (None: every one). The
#: :class:`broker.Bus` methods give the defaults; these take every argument from them.
Ids = Collection[str] | None
Where = DeadLetterSelection | None


class DeadLetterOps:
    """The dead-letter operations on the broker behind ``adapter``, under ``policy``."""

    def __init__(self, adapter: Adapter, policy: DeadLetter) -> None:
        self.adapter = adapter
        self.policy = policy

    # -- naming and listing ----------------------------------------------------------------

    def topic(self, topic: str, group: str = "") -> str:
        """The dead-letter topic of ``topic`` under the policy."""
        return self.policy.topic_for(topic, group)

    def topic_of(self, name: str) -> str:
        """``name`` when it already is a dead-letter topic under the policy, else the
        dead-letter topic of ``name`` (for tools that take a topic or its DLQ)."""
        return name if self.policy.is_topic(name) else self.policy.topic_for(name, "")

    async def topics(self) -> list[str]:
        """The dead-letter topics (under the policy) the broker has."""
        return [t.name for t in await self._listed() if self.policy.is_topic(t.name)]

    async def _listed(self) -> list[TopicInfo]:
        """The broker's topics, requesters' private reply topics left out (as ``Bus.topics``)."""
        return [t for t in await self.adapter.list_topics() if not is_reply_topic(t.name)]

    async def dead_letters(self, dlq_topic: str, *, limit: int, where: Where) -> list[Event]:
        """Events in ``dlq_topic``, oldest first, without consuming them: the first ``limit``,
        or the first ``limit`` that ``where`` selects (a ``where.group`` that no dead letter of
        ``dlq_topic`` is in raises :class:`TopicNotFoundError`)."""
        if where is None or where.everything:
            return await self.adapter.browse(dlq_topic, limit=limit)
        entries = await self.adapter.browse(dlq_topic, limit=_EVERY)
        return deadletter.select(dlq_topic, entries, where)[:limit]

    async def groups(
        self, dlq_topic: str, *, by: Sequence[str], where: Where
    ) -> list[DeadLetterGroup]:
        """The dead letters of ``dlq_topic`` (those ``where`` selects) grouped by the values of
        ``by``, the largest group first (:func:`broker.deadletter.groups`)."""
        return deadletter.groups(await self.dead_letters(dlq_topic, limit=_EVERY, where=where), by)

    # -- replay ------------------------------------------------------------------------------

    async def replay(
        self, dlq_topic: str, ids: Ids, *, where: Where, to: str | None
    ) -> list[Event]:
        """Publish dead letters (all, or those ``ids`` and ``where`` choose) back to their
        original topic, or all to ``to``, stripped (:func:`broker.deadletter.strip`), then
        remove them, and only them, from ``dlq_topic``; returns the events replayed."""
        if to is not None and to == dlq_topic:
            raise ConfigurationError(
                f"cannot replay {dlq_topic} into itself; name another topic to replay to"
            )
        entries, chosen = await self._chosen(dlq_topic, ids, where, "replay")
        partial = ids is not None and len(chosen) < len(entries)
        if partial and not self.adapter.capabilities.selective_delete:
            raise ConfigurationError(
                f"{self.adapter.url} cannot delete single events from {dlq_topic}; "
                "replay all of them instead"
            )
        targets = [to or self._origin(dlq_topic, entry) for entry in chosen]
        await self._require_groups(dlq_topic, targets)
        replayed = []
        for target, entry in zip(targets, chosen, strict=True):
            original = deadletter.strip(entry)
            await self.adapter.publish(target, original)
            replayed.append(original)
        # Only the dead letters read: one that arrived since (a replayed event that failed
        # again, with the same id) stays. Kafka deletes the records up to where its read ended.
        if chosen:
            await self.adapter.purge(dlq_topic, [e.id for e in chosen], among=len(entries))
        return replayed

    async def _chosen(
        self, dlq_topic: str, ids: Ids, where: Where, action: str
    ) -> tuple[list[Event], list[Event]]:
        """The dead letters of ``dlq_topic`` (all, read once) and those ``ids`` and ``where``
        choose (see :func:`broker.deadletter.choose`)."""
        where = self._selective(dlq_topic, where, action)
        entries = await self.adapter.browse(dlq_topic, limit=_EVERY)
        return entries, deadletter.choose(dlq_topic, entries, ids, where)

    def _selective(self, dlq_topic: str, where: Where, action: str) -> Where:
        """``where``, None when it chooses everything; refused where single dead letters
        cannot be deleted."""
        where = None if where is None or where.everything else where
        if where is not None and not self.adapter.capabilities.selective_delete:
            raise ConfigurationError(
                f"{self.adapter.url} cannot delete single events from {dlq_topic}, so a {action} "
                f"of the dead letters that match {where.describe()} is refused; {action} the "
                f"whole {dlq_topic} (without --id and filters), or copy what you need first "
                f"(choreo dlq ls ... --output json)"
            )
        return where

    def _origin(self, dlq_topic: str, entry: Event) -> str:
        """Where a dead letter is replayed to: its ``dlqtopic``, else what the DLQ name says."""
        found = deadletter.info(entry)
        target = (found.topic if found else "") or self.policy.origin_of(dlq_topic)
        if not target:
            raise TopicNotFoundError(
                f"event {entry.id} in {dlq_topic} names no original topic and "
                f"{dlq_topic} is not a dead-letter topic under "
                f"{self.policy.topic_template!r}; nothing was replayed"
            )
        return target

    async def _require_groups(self, dlq_topic: str, targets: list[str]) -> None:
        """Refuse a replay whose events a broker without retention would drop: one that keeps
        events only in its groups' queues (RabbitMQ) drops an event published to a topic no
        group subscribes to, and the dead letter would be gone with it."""
        if self.adapter.capabilities.replay or not targets:
            return
        grouped = {info.name for info in await self._listed() if info.groups}
        orphans = sorted(set(targets) - grouped)
        if orphans:
            raise TopicNotFoundError(
                f"no group subscribes to {', '.join(orphans)} on {self.adapter.url}, which keeps "
                f"events only for existing groups: replaying {dlq_topic} would drop them; "
                f"subscribe a group to it first (choreo subscribe {orphans[0]} --group G "
                "--timeout 1s); nothing was replayed"
            )

    # -- purge -------------------------------------------------------------------------------

    async def purge(self, dlq_topic: str, ids: Ids, *, where: Where) -> int:
        """Delete dead letters (all, or only those ``ids`` and ``where`` choose); returns how
        many were deleted. Reads ``dlq_topic`` once: through the adapter's ``purge_chosen``
        where it has one, else ``browse`` then ``purge(ids, among=N)``."""
        if ids is None and (where is None or where.everything):
            return await self.adapter.purge(dlq_topic)
        if ids is not None and not self.adapter.capabilities.selective_delete:
            raise ConfigurationError(
                f"{self.adapter.url} cannot delete single events; purge the whole {dlq_topic}"
            )
        where = self._selective(dlq_topic, where, "purge")

        def choose(entries: list[Event]) -> set[str]:
            return {e.id for e in deadletter.choose(dlq_topic, entries, ids, where)}

        purge_chosen = chosen_purger(self.adapter)
        if purge_chosen is not None:  # one read
            return await purge_chosen(dlq_topic, choose)
        entries = await self.adapter.browse(dlq_topic, limit=_EVERY)
        chosen = choose(entries)
        if not chosen:
            return 0
        return await self.adapter.purge(dlq_topic, sorted(chosen), among=len(entries))
