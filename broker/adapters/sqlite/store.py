"""The SQLite file behind ``sqlite:///path``: tables and the transactions the adapter runs.

Everything here is synchronous and runs on the adapter's single database thread. Layout:

* ``topics(name, partitions)``;
* ``log(seq, topic, part, event_id, body)``: one row per event, ``seq`` global and increasing,
  ``body`` the structured-mode CloudEvent JSON;
* ``offsets(topic, grp, part, committed, owner, lease_until)``: per group and partition the last
  handled ``seq`` and which member holds the partition until when;
* ``members(topic, grp, member, heartbeat)``: live subscriptions, for a fair split;
* ``scheduled(id, topic, event_id, key, body, due)``: delayed events (``deliverat``) not in the
  log yet; :meth:`Store.promote` moves the due ones into the log in one transaction, so a
  delayed event is in exactly one of the two tables, whoever crashes when.

A member owns a partition while its lease lasts and renews it while it makes progress; a member
that dies (or whose handler hangs past the visibility timeout) loses it, and the next member
resumes after ``committed``: at-least-once, in order per partition. Member ids name their
process (:mod:`~broker.adapters.sqlite.owner`): a rebalance first forgets the members of the
group whose process is provably dead (same machine, pid gone or reused) and frees their leases
at once, so a restarted consumer does not wait out its killed predecessor's lease.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.adapters.sqlite.owner import provably_dead
from broker.adapters.sqlite.wire import Row
from broker.sqlstore import use_wal

__all__ = ["Claim", "Rebalance", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, part INTEGER NOT NULL, event_id TEXT NOT NULL,
    body TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS log_by_partition ON log (topic, part, seq);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, grp TEXT NOT NULL, part INTEGER NOT NULL,
    committed INTEGER NOT NULL, owner TEXT, lease_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, grp, part));
CREATE TABLE IF NOT EXISTS scheduled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, event_id TEXT NOT NULL, key TEXT,
    body TEXT NOT NULL, due REAL NOT NULL);
CREATE INDEX IF NOT EXISTS scheduled_by_due ON scheduled (due, id);
CREATE TABLE IF NOT EXISTS members (
    topic TEXT NOT NULL, grp TEXT NOT NULL, member TEXT NOT NULL, heartbeat REAL NOT NULL,
    PRIMARY KEY (topic, grp, member));
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition a member now owns, and the last handled ``seq`` to resume after."""

    topic: str
    part: int
    committed: int


@dataclass(frozen=True, slots=True)
class Rebalance:
    """What a rebalance decided for one member."""

    claimed: list[Claim]
    released: list[tuple[str, int]]
    lost: list[tuple[str, int]]
    #: held partitions another member should get once this one's work on them is done
    revoking: list[tuple[str, int]]
    #: members found dead (their process is gone) whose leases were freed
    reaped: list[str] = field(default_factory=list)


class Store:
    """One connection to the broker file; only ever used from one thread."""

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 30.0):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        use_wal(self.db, busy_timeout)
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
        self._partitions: dict[str, int] = {}

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    # -- topics ----------------------------------------------------------------------------

    def ensure_topic(self, topic: str, partitions: int) -> int:
        """The topic's partition count, creating the topic if needed."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        self.db.execute("INSERT OR IGNORE INTO topics VALUES (?, ?)", (topic, partitions))
        row = self.db.execute("SELECT partitions FROM topics WHERE name=?", (topic,)).fetchone()
        self._partitions[topic] = int(row[0])
        return self._partitions[topic]

    def topics(self) -> list[tuple[str, int, int, list[str]]]:
        """(name, partitions, events, groups) for every topic."""
        counts = dict(self.db.execute("SELECT topic, count(*) FROM log GROUP BY topic").fetchall())
        groups: dict[str, set[str]] = {}
        for topic, grp in self.db.execute("SELECT DISTINCT topic, grp FROM offsets"):
            groups.setdefault(topic, set()).add(grp)
        return [
            (name, parts, counts.get(name, 0), sorted(groups.get(name, ())))
            for name, parts in self.db.execute("SELECT name, partitions FROM topics ORDER BY name")
        ]

    # -- publishing ------------------------------------------------------------------------

    def append(
        self,
        rows: Sequence[Row],
        partitions: int,
        delayed: Sequence[tuple[Row, float]] = (),
    ) -> list[Exception | None]:
        """Insert (topic, event_id, key, body) rows into the log, and ``delayed`` (row, due)
        pairs into ``scheduled``, in one transaction; one outcome per row, ``rows`` first.

        A row that cannot be stored for itself (text SQLite cannot hold, such as a lone
        surrogate in its topic, id or key) gets its error and is left out; the others are
        stored. An error of the database (locked, full, read-only) raises for all of them.
        """
        now = time.time()
        outcomes: list[Exception | None] = []
        with self.transaction():
            logged = []
            for row in rows:
                error = _unstorable(row)
                outcomes.append(error)
                if error is None:
                    logged.append(row)
            self._log_rows(logged, partitions, now)
            scheduled = []
            for row, due in delayed:
                error = _unstorable(row)
                outcomes.append(error)
                if error is None:
                    scheduled.append((*row, due))
            if scheduled:
                self.db.executemany(
                    "INSERT INTO scheduled (topic, event_id, key, body, due)"
                    " VALUES (?, ?, ?, ?, ?)",
                    scheduled,
                )
        return outcomes

    def _log_rows(self, rows: Sequence[Row], partitions: int, now: float) -> None:
        values = []
        for topic, event_id, key, body in rows:
            count = self.ensure_topic(topic, partitions)
            values.append((topic, _partition(key or event_id, count), event_id, body, now))
        if values:
            self.db.executemany(
                "INSERT INTO log (topic, part, event_id, body, created) VALUES (?, ?, ?, ?, ?)",
                values,
            )

    def next_due(self) -> float | None:
        """When the earliest delayed event is due (epoch seconds); None when there is none."""
        row = self.db.execute("SELECT min(due) FROM scheduled").fetchone()
        return None if row[0] is None else float(row[0])

    def promote(self, partitions: int) -> tuple[set[str], float | None]:
        """Move the delayed events that are due into the log, earliest (then first published)
        first; the topics that got some, and when the next one is due."""
        now = time.time()
        with self.transaction():
            due = self.db.execute(
                "SELECT id, topic, event_id, key, body FROM scheduled WHERE due <= ?"
                " ORDER BY due, id",
                (now,),
            ).fetchall()
            if due:
                self._log_rows([row[1:] for row in due], partitions, now)
                self.db.executemany("DELETE FROM scheduled WHERE id=?", [(r[0],) for r in due])
            upcoming = self.next_due()
        return {row[1] for row in due}, upcoming

    # -- groups ----------------------------------------------------------------------------

    def join(
        self, topics: Sequence[str], group: str, *, from_beginning: bool, partitions: int
    ) -> None:
        """Create the group's offsets where missing: at the end, or before the first event."""
        with self.transaction():
            for topic in topics:
                for part in range(self.ensure_topic(topic, partitions)):
                    start = 0
                    if not from_beginning:
                        row = self.db.execute(
                            "SELECT max(seq) FROM log WHERE topic=? AND part=?", (topic, part)
                        ).fetchone()
                        start = row[0] or 0
                    self.db.execute(
                        "INSERT OR IGNORE INTO offsets (topic, grp, part, committed)"
                        " VALUES (?, ?, ?, ?)",
                        (topic, group, part, start),
                    )

    def rebalance(
        self,
        topics: Sequence[str],
        group: str,
        member: str,
        *,
        lease: float,
        held: Collection[tuple[str, int]],
        busy: Collection[tuple[str, int]],
        stale: Collection[tuple[str, int]],
    ) -> Rebalance:
        """Heartbeat, then claim the partitions due to ``member`` and release the others.

        ``held``: partitions the member works on; ``busy``: those with unacked deliveries (not
        handed over yet); ``stale``: those whose oldest unacked delivery passed the visibility
        timeout (their lease is not renewed).
        """
        now = time.time()
        result = Rebalance([], [], [], [])
        claimed, released, lost, revoking = (
            result.claimed,
            result.released,
            result.lost,
            result.revoking,
        )
        with self.transaction():
            for topic in topics:
                result.reaped.extend(self._reap(topic, group, member, now))
                live = self._live_members(topic, group, member, now, lease)
                rows = self.db.execute(
                    "SELECT part, committed, owner, lease_until FROM offsets"
                    " WHERE topic=? AND grp=? ORDER BY part",
                    (topic, group),
                ).fetchall()
                for part, committed, owner, lease_until in rows:
                    key = (topic, part)
                    desired = live[part % len(live)] == member
                    mine = owner == member and lease_until >= now
                    if key in held and not mine:
                        lost.append(key)
                    elif mine and key in held and (desired or key in busy):
                        if key not in stale:
                            self._set_owner(topic, group, part, member, now + lease)
                        if not desired:
                            revoking.append(key)
                    elif mine:
                        self._set_owner(topic, group, part, None, 0)
                        released.append(key)
                    elif desired and (owner is None or lease_until < now):
                        self._set_owner(topic, group, part, member, now + lease)
                        claimed.append(Claim(topic, part, committed))
        return result

    def _reap(self, topic: str, group: str, member: str, now: float) -> list[str]:
        """Forget the members of (topic, group) whose process is provably dead, in every
        group, and free their leases."""
        candidates = self.db.execute(
            "SELECT member FROM members WHERE topic=? AND grp=? UNION SELECT owner FROM offsets"
            " WHERE topic=? AND grp=? AND owner IS NOT NULL AND lease_until >= ?",
            (topic, group, topic, group, now),
        ).fetchall()
        dead = [m for (m,) in candidates if m != member and provably_dead(m)]
        for gone in dead:
            self.db.execute("DELETE FROM members WHERE member=?", (gone,))
            self.db.execute("UPDATE offsets SET owner=NULL, lease_until=0 WHERE owner=?", (gone,))
        return dead

    def _live_members(
        self, topic: str, group: str, member: str, now: float, lease: float
    ) -> list[str]:
        self.db.execute(
            "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)", (topic, group, member, now)
        )
        self.db.execute(
            "DELETE FROM members WHERE topic=? AND grp=? AND heartbeat < ?",
            (topic, group, now - lease),
        )
        return [
            row[0]
            for row in self.db.execute(
                "SELECT member FROM members WHERE topic=? AND grp=? ORDER BY member",
                (topic, group),
            )
        ]

    def _set_owner(
        self, topic: str, group: str, part: int, owner: str | None, until: float
    ) -> None:
        self.db.execute(
            "UPDATE offsets SET owner=?, lease_until=? WHERE topic=? AND grp=? AND part=?",
            (owner, until, topic, group, part),
        )

    def leave(self, topics: Sequence[str], group: str, member: str) -> None:
        """Release every partition of ``member`` and forget it."""
        with self.transaction():
            for topic in topics:
                self.db.execute(
                    "UPDATE offsets SET owner=NULL, lease_until=0"
                    " WHERE topic=? AND grp=? AND owner=?",
                    (topic, group, member),
                )
                self.db.execute(
                    "DELETE FROM members WHERE topic=? AND grp=? AND member=?",
                    (topic, group, member),
                )

    def commit(self, group: str, member: str, positions: Iterable[tuple[str, int, int]]) -> None:
        """Advance committed positions of partitions ``member`` still owns."""
        with self.transaction():
            self.db.executemany(
                "UPDATE offsets SET committed=? WHERE topic=? AND grp=? AND part=?"
                " AND owner=? AND committed < ?",
                [(seq, topic, group, part, member, seq) for topic, part, seq in positions],
            )

    def backlog(self, topics: Sequence[str], group: str) -> list[tuple[str, int, int, int]]:
        """(topic, part, last seq in the log, the group's committed seq) of every partition of
        ``topics``, whoever holds it, read in one statement (one snapshot)."""
        marks = ", ".join("?" * len(topics))
        rows = self.db.execute(
            "SELECT o.topic, o.part, coalesce((SELECT max(seq) FROM log"
            " WHERE log.topic=o.topic AND log.part=o.part), 0), o.committed"
            f" FROM offsets o WHERE o.grp=? AND o.topic IN ({marks}) ORDER BY o.topic, o.part",
            (group, *topics),
        ).fetchall()
        return [(str(t), int(p), int(last), int(done)) for t, p, last, done in rows]

    def fetch(self, wanted: Sequence[tuple[str, int, int, int]]) -> list[tuple[str, int, int, str]]:
        """Rows (topic, part, seq, body) after each (topic, part, after_seq, limit)."""
        out: list[tuple[str, int, int, str]] = []
        for topic, part, after, limit in wanted:
            out.extend(
                (topic, part, seq, body)
                for seq, body in self.db.execute(
                    "SELECT seq, body FROM log WHERE topic=? AND part=? AND seq>?"
                    " ORDER BY seq LIMIT ?",
                    (topic, part, after, limit),
                )
            )
        return out

    # -- inspection ------------------------------------------------------------------------

    def browse(self, topic: str, limit: int) -> list[str]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT body FROM log WHERE topic=? ORDER BY seq LIMIT ?", (topic, limit)
            )
        ]

    def delete_topic(self, topic: str) -> None:
        """Delete ``topic``: its events, its groups' positions and members."""
        with self.transaction():
            for table in ("log", "offsets", "members"):
                self.db.execute(f"DELETE FROM {table} WHERE topic=?", (topic,))
            self.db.execute("DELETE FROM topics WHERE name=?", (topic,))

    def purge_chosen(self, topic: str, choose: Callable[[list[str]], Collection[str]]) -> int:
        """Delete the events of ``topic`` whose ids ``choose`` picks from the bodies, oldest
        first, in one transaction (``choose`` raising deletes nothing)."""
        with self.transaction():
            rows = self.db.execute(
                "SELECT seq, body FROM log WHERE topic=? ORDER BY seq", (topic,)
            ).fetchall()
            return self.purge(topic, choose([body for _, body in rows]), len(rows))

    def purge(self, topic: str, ids: Collection[str] | None, among: int | None = None) -> int:
        """Delete the events of ``topic`` (only ``ids``; only among its first ``among``)."""
        with self.transaction():
            last = self.db.execute(
                "SELECT max(seq) FROM (SELECT seq FROM log WHERE topic=? ORDER BY seq LIMIT ?)",
                (topic, -1 if among is None else among),
            ).fetchone()[0]
            if last is None:
                return 0
            if ids is None:
                cursor = self.db.execute("DELETE FROM log WHERE topic=? AND seq<=?", (topic, last))
            else:
                cursor = self.db.executemany(
                    "DELETE FROM log WHERE topic=? AND event_id=? AND seq<=?",
                    [(topic, i, last) for i in ids],
                )
            return cursor.rowcount


def _partition(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error); re-entrant."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.outer:
            return
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _unstorable(row: Row) -> Exception | None:
    """Why SQLite cannot bind ``row``'s text (a lone surrogate), or None: checked before the
    insert, so one such row fails alone instead of the whole transaction."""
    topic, event_id, key, body = row
    try:
        for text in (topic, event_id, key or "", body):
            text.encode()
    except UnicodeError as exc:
        return exc
    return None
