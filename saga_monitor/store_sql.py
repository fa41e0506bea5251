"""The SQL saga store: the saga tables and queries over :mod:`broker.sqlstore`.

* ``sqlite:///.choreo/sagas.db`` (the default): one file in WAL mode. One monitor writes it and
  keeps recent instances in memory; the CLI and the web page may read it at the same time.
* ``postgresql://user:pass@host:5432/db?schema=sagas`` (psycopg 3): shared by several monitors.
  The tables live in ``schema`` (default ``public``; created when missing). Each transaction
  takes a lock per (saga, correlation id) before it reads an instance (an advisory lock, held to
  its end), so two monitors never apply events of one instance at once, not even when both
  would create it, and the second one sees what the first one committed (duplicates included).
  A transaction takes the locks of the instances it was told of (:meth:`Transaction.prefetch`)
  together, in one order, so two never wait for each other. Each lock takes a slot of the
  server's shared lock table until the commit, so a transaction touches at most
  :data:`LOCKED_INSTANCES` instances (a bigger batch, tick or prune takes several).

See :mod:`saga_monitor.store` for what every store keeps and why each event's application is
one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from broker.envelope import parse_time
from broker.sqlstore import SQLITE, Migration, SqlStore, Tx, upsert
from saga_monitor.errors import InstanceNotFoundError, SagaConfigError, SagaStoreError
from saga_monitor.model import Alert, Instance, Observation
from saga_monitor.queries import (
    COUNTED,
    DataField,
    Note,
    Page,
    Query,
    StepView,
    awaited,
    field_in_timeline,
    step_view,
)
from saga_monitor.store import (
    DEFAULT_STORE_URL,
    Key,
    MonitorStatus,
    Transaction,
    obs_doc,
    obs_from,
)

__all__ = ["LOCKED_INSTANCES", "MIGRATIONS", "SqlSagaStore"]

#: The saga tables, version by version (1: the tables from before versions were kept).
MIGRATIONS = (
    Migration(
        1,
        (
            "CREATE TABLE IF NOT EXISTS {p}instances (saga TEXT NOT NULL, "
            "correlation_id TEXT NOT NULL, state TEXT NOT NULL, started {real} NOT NULL, "
            "updated {real} NOT NULL, due {real}, finished {real}, doc TEXT NOT NULL, "
            "PRIMARY KEY (saga, correlation_id))",
            "CREATE INDEX IF NOT EXISTS {p}instances_due ON {p}instances (due)",
            "CREATE INDEX IF NOT EXISTS {p}instances_updated ON {p}instances (updated)",
            "CREATE INDEX IF NOT EXISTS {p}instances_corr ON {p}instances (correlation_id)",
            "CREATE TABLE IF NOT EXISTS {p}orphans (saga TEXT NOT NULL, "
            "correlation_id TEXT NOT NULL, event_key TEXT NOT NULL, time {real} NOT NULL, "
            "doc TEXT NOT NULL, PRIMARY KEY (saga, correlation_id, event_key))",
            "CREATE TABLE IF NOT EXISTS {p}alerts (seq {autoincrement}, doc TEXT NOT NULL)",
        ),
    ),
    Migration(
        2,
        (  # orphans are reported once the watermark passes them; monitors record theirs
            "ALTER TABLE {p}orphans ADD COLUMN reported INTEGER NOT NULL DEFAULT 0",
            "CREATE TABLE IF NOT EXISTS {p}monitors (name TEXT PRIMARY KEY, "
            "watermark {real}, lag {real}, updated {real} NOT NULL)",
        ),
    ),
    Migration(
        3,
        (  # the console's filters; operators' notes; what explains a wait (a dead letter)
            "ALTER TABLE {p}instances ADD COLUMN stuck_since {real}",
            "ALTER TABLE {p}instances ADD COLUMN anomalies TEXT",
            "ALTER TABLE {p}instances ADD COLUMN awaiting TEXT",
            "CREATE TABLE IF NOT EXISTS {p}notes (seq {autoincrement}, saga TEXT NOT NULL, "
            "correlation_id TEXT NOT NULL, kind TEXT NOT NULL, who TEXT NOT NULL, "
            "at {real} NOT NULL, note TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {p}notes_instance ON {p}notes (saga, correlation_id)",
            "CREATE TABLE IF NOT EXISTS {p}causes (saga TEXT NOT NULL, "
            "correlation_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (saga, correlation_id))",
        ),
    ),
    Migration(
        4,
        (  # when a monitor stopped cleanly (NULL while it runs): its silence is no lag
            "ALTER TABLE {p}monitors ADD COLUMN stopped {real}",
        ),
    ),
    Migration(
        5,
        (  # the stuck episode a note was written in: an ack holds for that episode only
            "ALTER TABLE {p}notes ADD COLUMN episode {real}",
            # acks written before: taken to be for the episode the instance is in now
            "UPDATE {p}notes SET episode = (SELECT i.stuck_since FROM {p}instances i "
            "WHERE i.saga = {p}notes.saga AND i.correlation_id = {p}notes.correlation_id) "
            "WHERE kind = 'ack'",
        ),
    ),
    Migration(
        6,
        (  # a store of a stream's size: what the console and the metrics ask, by index
            # (docs/performance.md, "The saga store at 200,000 instances")
            "CREATE INDEX IF NOT EXISTS {p}instances_state ON {p}instances (state, updated)",
            "CREATE INDEX IF NOT EXISTS {p}instances_counts ON {p}instances (saga, state)",
            "CREATE INDEX IF NOT EXISTS {p}instances_anomalous ON {p}instances (updated) "
            "WHERE anomalies IS NOT NULL",
            # the list's order, covering the keys: a page deep in it skips index entries only
            "CREATE INDEX IF NOT EXISTS {p}instances_listed "
            "ON {p}instances (updated, correlation_id, saga)",
            "DROP INDEX IF EXISTS {p}instances_updated",
            # the monitor's prune, every minute: the instances finished before the retention
            "CREATE INDEX IF NOT EXISTS {p}instances_finished ON {p}instances (finished) "
            "WHERE finished IS NOT NULL",
        ),
    ),
)
_COLUMNS = (
    "saga",
    "correlation_id",
    "state",
    "started",
    "updated",
    "due",
    "finished",
    "doc",
    "stuck_since",
    "anomalies",
    "awaiting",
)
#: Candidates a payload search reads and checks (beyond, its total is a lower bound), and
#: how many it reads at a time.
_SEARCH_SCAN = 100_000
_CHUNK = 1000
#: The acknowledgements that hold for an instance as it is now: those written in the stuck
#: episode it is in (``stuck_since`` is set while it is stuck only), see :func:`covers`.
_COVERING = (
    "n.saga = {p}instances.saga AND n.correlation_id = {p}instances.correlation_id "
    "AND n.kind = 'ack' AND (n.episode = {p}instances.stuck_since "
    "OR (n.episode IS NULL AND {p}instances.stuck_since IS NULL))"
)
_ACKED = f"EXISTS (SELECT 1 FROM {{p}}notes n WHERE {_COVERING})"
_PUT = upsert("{p}instances", _COLUMNS, key=("saga", "correlation_id"))
#: Takes the advisory locks of several instances (PostgreSQL) in ascending lock number (the
#: order the sorted subquery hands its rows to the outer one), as ``lock_instance`` takes one.
_LOCK_ALL = (
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h "
    "FROM unnest(CAST(? AS text[])) AS k ORDER BY h) AS ordered"
)
#: Narrows a statement on the instances to the keys of two arrays (saga, correlation id).
_IN_KEYS = (
    " AND (saga, correlation_id) IN (SELECT * FROM unnest(CAST(? AS text[]), CAST(? AS text[])))"
)
#: The most instances one transaction locks (PostgreSQL): a batch, a tick or a prune touching
#: more takes several. PostgreSQL's lock table holds max_locks_per_transaction (64) times
#: max_connections (100) locks in all by default, shared by every session, and an advisory lock
#: takes a slot of it until the commit; a store's transactions take turns, so three monitors
#: hold 1,500 at most. (A prune's transaction this size also holds up a tick or a batch waiting
#: for one of its instances only briefly.)
LOCKED_INSTANCES = 500
#: The page size of a new SQLite store. An instance's document is 1-3 KB (five timeline
#: entries: 2.4 KB), and a row is never split between two pages below the page's size: with
#: SQLite's 4,096 most pages held one row and 1.5 KB of nothing, written to the log and again
#: into the file by each checkpoint (docs/performance.md, "Saga monitor, embedded catch-up:
#: 8 KB pages").
_PAGE_SIZE = 8192
#: Instances a SQLite store keeps in memory between events (a shared store always reads).
_CACHED = 50_000
#: Instances :meth:`SqlSagaStore.search` keeps decoded (the board's sample reads up to 20,000),
#: and the most memory they may take, reckoned as :data:`_HELD` bytes a character of their
#: documents (the text, the key, and the decoded instance about twice its size: measured on
#: the bench's documents of 1.7 kB). At the bench's shape 64 MB holds 12,000 of them, more
#: than the board's sample of 10,000; instances with long timelines are fewer.
_DECODED = 20_000
_DECODED_BYTES = 64 << 20
_HELD = 3
#: The most instances one query for notes or causes asks for.
_KEYS_MAX = 1000
#: The most correlation ids one prefetch query asks for (SQLite allowed 999 parameters before
#: 3.32); fewer are padded to the next power of two, so that few statement texts exist.
_IN_MAX = 256


class SqlSagaStore:
    """A saga store in SQLite or PostgreSQL (see the module docstring)."""

    #: Its transactions may run on another thread than its readers (each thread has its own
    #: connection; the transactions take turns): the monitor applies its batches in a thread
    #: of their own, and reads the broker while the database works.
    threadsafe = True

    def __init__(self, url: str = DEFAULT_STORE_URL) -> None:
        self._db = SqlStore(
            url,
            what="saga store",
            hint="sqlite:///path/sagas.db, postgresql://user@host:5432/db?schema=sagas or memory://",
            error=SagaStoreError,
            usage_error=SagaConfigError,
            schema="public",
            background_checkpoints=True,  # the batches' commits do not wait for the disk
            page_size=_PAGE_SIZE,
        )
        self._db.open("saga_", MIGRATIONS)
        self.url = self._db.url
        self._lock = threading.RLock()
        #: The instances :meth:`search` decoded, by key: (the row's version, the instance, what
        #: it holds, reckoned), least recently listed first; and what guards it (searches may
        #: run on several threads).
        self._decoded: OrderedDict[Key, tuple[str, Instance, int]] = OrderedDict()
        self._decoded_bytes = 0  # what they hold, reckoned (see _DECODED_BYTES)
        self._decoding = threading.Lock()
        self.cache: OrderedDict[tuple[str, str], Instance] | None = (
            OrderedDict() if self._db.dialect is SQLITE else None
        )
        #: Whether :attr:`cache` holds every instance of the table (it started empty and none
        #: was evicted or undone since): an instance not in the cache then does not exist, and
        #: a catch-up into a new store reads nothing for its new instances.
        self.whole_table = self.cache is not None and not self._db.query(
            "SELECT 1 FROM {p}instances LIMIT 1"
        )
        #: (saga, correlation id) of the buffered orphans, where one monitor writes the store
        #: (SQLite): a start event with none (nearly all of them) reads nothing. A superset:
        #: an entry may outlive its rows, never the other way round.
        self.orphaned: set[tuple[str, str]] | None = (
            self._orphan_keys() if self.cache is not None else None
        )
        #: Narrows a read to the keys (saga, correlation id) of one parameter (SQLite: a
        #: JSON list of pairs) or two (PostgreSQL: arrays).
        self._in_keys = (
            "(saga, correlation_id) IN (SELECT json_extract(value, '$[0]'), "
            "json_extract(value, '$[1]') FROM json_each(?))"
            if self._db.dialect is SQLITE
            else "1 = 1" + _IN_KEYS
        )
        #: Reads the instance an event changes, locking its row where the database can.
        self.select_instance = (
            "SELECT doc FROM {p}instances WHERE saga = ? AND correlation_id = ?"
            + self._db.dialect.for_update
        )
        #: The ``stuck_since`` of an instance's document, in SQL.
        self._stuck_since = (
            "json_extract(doc, '$.stuck_since')"
            if self._db.dialect is SQLITE
            else "CAST(doc AS jsonb) ->> 'stuck_since'"
        )
        #: Serialises the transactions of several monitors on one instance (PostgreSQL).
        self.lock_instance = (
            None
            if self._db.dialect is SQLITE
            else "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"
        )
        #: The most instances one transaction touches (see
        #: :class:`~saga_monitor.store.LockingStore`): each takes a slot of PostgreSQL's lock
        #: table; SQLite has none.
        self.instances_per_transaction = None if self.lock_instance is None else LOCKED_INSTANCES

    def remember(self, instance: Instance) -> None:
        """Keep ``instance`` in the cache (evicting the least recently used)."""
        if self.cache is None:
            return
        key = (instance.saga, instance.correlation_id)
        self.cache[key] = instance
        self.cache.move_to_end(key)
        while len(self.cache) > _CACHED:
            self.cache.popitem(last=False)
            self.whole_table = False

    def _forget_cache(self) -> None:
        """Empty the cache (it no longer holds the whole table)."""
        if self.cache is not None:
            self.cache.clear()
            self.whole_table = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A batch of events' reads and writes, committed together (undone on an error). An
        instance changed several times is written once, at the end."""
        with self._lock:
            try:
                with self._db.transaction(write=True) as tx:
                    txn = _SqlTransaction(self, tx)
                    yield txn
                    txn.write()
            except BaseException:
                self._forget_cache()  # cached instances may hold the undone changes
                if self.orphaned is not None:  # orphans taken may be back
                    self.orphaned = self._orphan_keys()
                raise

    def _orphan_keys(self) -> set[tuple[str, str]]:
        rows = self._db.query("SELECT DISTINCT saga, correlation_id FROM {p}orphans")
        return {(row[0], row[1]) for row in rows}

    def due(self, watermark: datetime) -> list[tuple[str, str]]:
        """(saga, correlation id) of the instances to judge again at ``watermark``."""
        rows = self._db.query(
            "SELECT saga, correlation_id FROM {p}instances WHERE due IS NOT NULL AND due <= ? "
            "ORDER BY due",
            watermark.timestamp(),
        )
        return [(row[0], row[1]) for row in rows]

    def unreported_orphans(self, watermark: datetime) -> list[tuple[str, str, str, Observation]]:
        """Orphans not reported yet whose time ``watermark`` passed, oldest first."""
        rows = self._db.query(
            "SELECT saga, correlation_id, event_key, doc FROM {p}orphans WHERE reported = 0 "
            "AND time <= ? ORDER BY time LIMIT 1000",
            watermark.timestamp(),
        )
        return [(row[0], row[1], row[2], obs_from(row[3])) for row in rows]

    def pending_alerts(self, limit: int = 500) -> list[tuple[int, Alert]]:
        """The alerts in the outbox, oldest first."""
        rows = self._db.query("SELECT seq, doc FROM {p}alerts ORDER BY seq LIMIT ?", limit)
        return [(int(row[0]), Alert.from_dict(json.loads(row[1]))) for row in rows]

    def delete_alerts(self, seqs: list[int]) -> None:
        """Remove published alerts from the outbox."""
        if not seqs:
            return
        with self._db.transaction(write=True) as tx:
            tx.execute_many("DELETE FROM {p}alerts WHERE seq = ?", [(seq,) for seq in seqs])

    def instances(
        self,
        *,
        saga: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 1000,
    ) -> list[Instance]:
        """Instances, most recently updated first."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("saga", saga), ("state", state), ("correlation_id", correlation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("updated >= ?")
            params.append(since.timestamp())
        rows = self._db.query(
            f"SELECT doc FROM {{p}}instances WHERE {' AND '.join(where)} "
            "ORDER BY updated DESC LIMIT ?",
            *params,
            limit,
        )
        return [Instance.from_dict(json.loads(row[0])) for row in rows]

    def search(self, query: Query) -> Page:
        """One page of the instances answering ``query``, with the total (a payload search
        pre-filters on the stored text, then checks each candidate)."""
        where, params = _where(query)
        condition = " AND ".join(where)
        if query.data is None:
            items = self._page(condition, params, query)
            if not query.counted:
                full = len(items) == query.limit
                return Page(items, query.offset + len(items), query.offset, query.limit, full)
            total = self._db.query(
                f"SELECT COUNT(*) FROM {{p}}instances WHERE {condition}", *params
            )[0][0]
            return Page(items, int(total), query.offset, query.limit)
        return self._search_data(query, query.data, condition, params)

    def _page(self, condition: str, params: list[Any], query: Query) -> list[Instance]:
        """The page's instances: its keys from the index, then their documents. On PostgreSQL
        the rows' versions (``xmin``) come first and only the documents of the instances not
        decoded at that version are read: the board's sample of 10,000 instances every few
        seconds read 17 MB of documents from the server, nearly all unchanged."""
        keep = query.limit <= _DECODED  # a larger page would only evict the board's
        version = "i.doc" if self._db.dialect is SQLITE else "CAST(i.xmin AS text)"
        rows = self._db.query(
            f"SELECT i.saga, i.correlation_id, {version} FROM {{p}}instances i JOIN (SELECT "
            f"saga, correlation_id, updated FROM {{p}}instances WHERE {condition} "
            "ORDER BY updated DESC, correlation_id LIMIT ? OFFSET ?) k ON i.saga = k.saga "
            "AND i.correlation_id = k.correlation_id ORDER BY k.updated DESC, k.correlation_id",
            *params,
            query.limit,
            query.offset,
        )
        if self._db.dialect is SQLITE:  # the document is its own version
            return [self._listed((saga, corr), doc, doc, keep) for saga, corr, doc in rows]
        found = {(saga, corr): self._known((saga, corr), ver) for saga, corr, ver in rows}
        missing = [key for key, instance in found.items() if instance is None]
        for chunk in self._by_keys(
            "saga, correlation_id, CAST(xmin AS text), doc", "instances", missing
        ):
            for saga, corr, ver, doc in chunk:  # newer than the keys' read, maybe: newer yet
                found[(saga, corr)] = self._listed((saga, corr), ver, doc, keep)
        return [i for i in found.values() if i is not None]  # pruned meanwhile: left out

    def _search_data(
        self, query: Query, field: DataField, condition: str, params: list[Any]
    ) -> Page:
        """A payload search: the candidates the pre-filter leaves, most recently updated first,
        read :data:`_CHUNK` at a time as they are checked (on their timelines' data alone);
        the page's instances are decoded whole. Counting stops at :data:`COUNTED` matches (or
        :data:`_SEARCH_SCAN` candidates): the total is then a lower bound."""
        wanted = query.offset + query.limit
        enough = max(wanted, COUNTED) + 1
        kept: list[tuple[str, str, str | None, str]] = []
        found = scanned = 0
        version = "NULL" if self._db.dialect is SQLITE else "CAST(xmin AS text)"
        select = (
            f"SELECT saga, correlation_id, {version}, doc FROM {{p}}instances "
            f"WHERE {condition} ORDER BY updated DESC, correlation_id LIMIT ?"
        )
        with (
            self._db.transaction() as tx,
            contextlib.closing(tx.stream(select, *params, _SEARCH_SCAN, size=_CHUNK)) as chunks,
        ):
            for rows in chunks:
                scanned += len(rows)
                for row in rows:
                    if field_in_timeline(field, row[3]):
                        found += 1
                        if query.offset < found <= wanted:
                            kept.append(row)
                        if found >= enough:
                            break
                if found >= enough:
                    break
        bounded = found >= enough or scanned >= _SEARCH_SCAN
        keep = query.limit <= _DECODED
        items = [self._listed((s, c), v or doc, doc, keep) for s, c, v, doc in kept]
        total = min(found, enough - 1)
        return Page(items, total, query.offset, query.limit, more=bounded)

    def _known(self, key: Key, version: str) -> Instance | None:
        """The instance of ``key`` decoded at ``version`` (see :meth:`_listed`), if kept."""
        with self._decoding:
            known = self._decoded.get(key)
            if known is None or known[0] != version:
                return None
            self._decoded.move_to_end(key)
            return known[1]

    def _listed(self, key: Key, version: str, doc: str, keep: bool = True) -> Instance:
        """The instance of ``key`` stored as ``doc``, decoded once while its row keeps its
        ``version`` (PostgreSQL's ``xmin``, which every update changes; SQLite's document
        text itself): the console's board reads the same thousands of instances every few
        seconds (the objects are shared by the searches' callers, who only read them).
        ``keep``: False for a page larger than the cache, decoded without evicting what the
        board keeps."""
        known = self._known(key, version)
        if known is not None:
            return known
        instance = Instance.from_dict(json.loads(doc))
        if not keep:
            return instance
        decoded = self._decoded
        with self._decoding:
            if (old := decoded.pop(key, None)) is not None:
                self._decoded_bytes -= old[2]
            decoded[key] = (version, instance, _HELD * len(doc))
            self._decoded_bytes += _HELD * len(doc)
            while len(decoded) > _DECODED or self._decoded_bytes > _DECODED_BYTES:
                self._decoded_bytes -= decoded.popitem(last=False)[1][2]
        return instance

    def add_note(self, note: Note) -> Note:
        """Keep an acknowledgement or annotation of an instance that is in the store, with
        the stuck episode the instance is in (its row's ``stuck_since``, copied as it is)."""
        with self._db.transaction(write=True) as tx:
            row = tx.one(
                "SELECT stuck_since FROM {p}instances WHERE saga = ? AND correlation_id = ?",
                note.saga,
                note.correlation_id,
            )
            if not row:
                raise InstanceNotFoundError(
                    f"no instance of {note.saga} with correlation id {note.correlation_id}"
                )
            tx.execute(
                "INSERT INTO {p}notes (saga, correlation_id, kind, who, at, note, episode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                note.saga,
                note.correlation_id,
                note.kind,
                note.who,
                note.at.timestamp(),
                note.text,
                row[0],
            )
        return dataclasses.replace(note, episode=_moment(row[0]))

    def notes(self, keys: list[Key]) -> dict[Key, list[Note]]:
        """The notes of the instances asked for, oldest first (a query per :data:`_KEYS_MAX`
        instances: a console page of 200 was 200 round trips to PostgreSQL)."""
        out: dict[Key, list[Note]] = {}
        for rows in self._by_keys(
            "saga, correlation_id, kind, who, at, note, episode", "notes", keys, " ORDER BY seq"
        ):
            for saga, corr, *r in rows:
                note = Note(saga, corr, r[0], r[1], _at(r[2]), r[3], _moment(r[4]))
                out.setdefault((saga, corr), []).append(note)
        return out

    def record_cause(self, saga: str, correlation_id: str, cause: dict[str, Any] | None) -> None:
        """Keep (or forget) what explains an instance's wait."""
        if cause is None:
            self._db.execute(
                "DELETE FROM {p}causes WHERE saga = ? AND correlation_id = ?", saga, correlation_id
            )
            return
        self._db.execute(
            upsert("{p}causes", ("saga", "correlation_id", "doc"), key=("saga", "correlation_id")),
            saga,
            correlation_id,
            json.dumps(cause),
        )

    def causes(self, keys: list[Key]) -> dict[Key, dict[str, Any]]:
        """The causes recorded for the instances asked for."""
        out: dict[Key, dict[str, Any]] = {}
        for rows in self._by_keys("saga, correlation_id, doc", "causes", keys):
            for saga, corr, doc in rows:
                out[(saga, corr)] = json.loads(doc)
        return out

    def _by_keys(
        self, columns: str, table: str, keys: list[Key], order: str = ""
    ) -> Iterator[list[Any]]:
        """The rows of ``table`` for ``keys`` (saga, correlation id), a query per
        :data:`_KEYS_MAX` keys, all in one transaction."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        select = f"SELECT {columns} FROM {{p}}{table} WHERE {self._in_keys}{order}"
        with self._db.transaction() as tx:
            for start in range(0, len(wanted), _KEYS_MAX):
                chunk = wanted[start : start + _KEYS_MAX]
                if self._db.dialect is SQLITE:
                    yield tx.all(select, json.dumps(chunk, ensure_ascii=False))  # as stored
                else:
                    yield tx.all(select, [k[0] for k in chunk], [k[1] for k in chunk])

    def step_views(self, states: Iterable[str | None], limit: int) -> Iterator[StepView]:
        """What the step graphs count (:class:`StepView`) of up to ``limit`` of the most
        recently updated instances of each of ``states`` (None: of any), each instance once,
        in one read and decoded from the document's few fields only: the sample
        :func:`saga_monitor.board.sampled` gives, without decoding it whole."""
        chosen: set[Key] = set()
        with self._db.transaction() as tx:
            for state in states:
                where = "1 = 1" if state is None else "state = ?"
                select = (
                    f"SELECT saga, correlation_id, doc FROM {{p}}instances WHERE {where} "
                    "ORDER BY updated DESC, correlation_id LIMIT ?"
                )
                params = (limit,) if state is None else (state, limit)
                with contextlib.closing(tx.stream(select, *params, size=_CHUNK)) as chunks:
                    for rows in chunks:
                        for saga, corr, doc in rows:
                            if (saga, corr) not in chosen:
                                chosen.add((saga, corr))
                                yield step_view(doc)

    def counts(self) -> dict[tuple[str, str], int]:
        """How many instances per (saga, state)."""
        rows = self._db.query("SELECT saga, state, COUNT(*) FROM {p}instances GROUP BY saga, state")
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def orphans(self, limit: int = 1000) -> list[tuple[str, str, Observation]]:
        """Buffered orphan events, oldest first."""
        rows = self._db.query(
            "SELECT saga, correlation_id, doc FROM {p}orphans ORDER BY time LIMIT ?", limit
        )
        return [(row[0], row[1], obs_from(row[2])) for row in rows]

    def oldest_stuck(self) -> dict[str, datetime]:
        """Per saga, when its longest-stuck unacknowledged instance got stuck (read from
        the documents)."""
        rows = self._db.query(
            f"SELECT saga, {self._stuck_since} FROM {{p}}instances "
            f"WHERE state = 'stuck' AND NOT {_ACKED}"
        )
        out: dict[str, datetime] = {}
        for saga, text in rows:
            if text:
                moment = parse_time(text)
                known = out.get(saga)
                out[saga] = moment if known is None else min(known, moment)
        return out

    def prune(
        self,
        finished_before: datetime,
        *,
        acknowledged_before: datetime | None = None,
        stuck_before: datetime | None = None,
    ) -> int:
        """Delete instances that finished (and orphans seen) before ``finished_before``,
        acknowledged ones whose last acknowledgement is older than ``acknowledged_before``,
        stuck ones stuck since before ``stuck_before``; returns how many instances went."""
        cutoff = finished_before.timestamp()
        conditions = ["(finished IS NOT NULL AND finished < ?)"]
        params: list[Any] = [cutoff]
        if acknowledged_before is not None:
            conditions.append(f"(SELECT MAX(n.at) FROM {{p}}notes n WHERE {_COVERING}) < ?")
            params.append(acknowledged_before.timestamp())
        if stuck_before is not None:
            conditions.append("(state = 'stuck' AND stuck_since < ?)")
            params.append(stuck_before.timestamp())
        orphaned = (
            "NOT EXISTS (SELECT 1 FROM {p}instances i WHERE i.saga = {t}.saga "
            "AND i.correlation_id = {t}.correlation_id)"
        )
        where = f"({' OR '.join(conditions)})"
        delete = f"DELETE FROM {{p}}instances WHERE {where}"
        with self._lock:
            try:
                shared = self.lock_instance is not None  # under the instances' locks, in chunks
                count = self._prune_locked(where, params) if shared else 0
                with self._db.transaction(write=True) as tx:
                    if not shared:  # SQLite: this monitor is the one writer
                        count = self._delete_instances(tx, delete, params)
                    tx.execute("DELETE FROM {p}orphans WHERE time < ?", cutoff)
                    if count:
                        for table in ("notes", "causes"):
                            target = "{p}" + table
                            tx.execute(
                                f"DELETE FROM {target} WHERE " + orphaned.replace("{t}", target)
                            )
            except BaseException:
                self._forget_cache()  # instances it let go of may be back
                raise
        return count

    def _prune_locked(self, where: str, params: list[Any]) -> int:
        """Delete the instances ``where`` matches (PostgreSQL), :data:`LOCKED_INSTANCES` at a
        time, each chunk in a transaction that takes their locks first (in one order, as
        :meth:`_SqlTransaction.prefetch` does) and matches them again under the locks. Rows
        deleted in scan order without the locks deadlocked with another monitor's tick or batch
        that held some of them and waited for others. Returns how many instances went."""
        keys = self._db.query(
            f"SELECT saga, correlation_id FROM {{p}}instances WHERE {where}", *params
        )
        delete = f"DELETE FROM {{p}}instances WHERE {where}{_IN_KEYS}"
        count = 0
        for start in range(0, len(keys), LOCKED_INSTANCES):
            chunk = keys[start : start + LOCKED_INSTANCES]
            sagas, ids = [row[0] for row in chunk], [row[1] for row in chunk]
            with self._db.transaction(write=True) as tx:
                tx.one(
                    _LOCK_ALL, [f"{saga}\x1f{corr}" for saga, corr in zip(sagas, ids, strict=True)]
                )
                count += tx.run(delete, *params, sagas, ids)
        return count

    def _delete_instances(self, tx: Tx, delete: str, params: list[Any]) -> int:
        """Run ``delete`` on the instances table; the instances it deleted leave the cache
        (the others stay, so a cache that held the whole table still does)."""
        cache = self.cache
        if cache is None:
            return tx.run(delete, *params)
        if sqlite3.sqlite_version_info < (3, 35):  # no RETURNING yet: forget them all
            self._forget_cache()
            return tx.run(delete, *params)
        gone = tx.all(delete + " RETURNING saga, correlation_id", *params)
        for saga, correlation_id in gone:
            cache.pop((saga, correlation_id), None)
        return len(gone)

    def watermark(self, monitor: str) -> datetime | None:
        """The last watermark ``monitor`` recorded."""
        row = self._db.query("SELECT watermark FROM {p}monitors WHERE name = ?", monitor)
        return _moment(row[0][0]) if row else None

    def record_monitor(
        self, monitor: str, watermark: datetime | None, lag: float, at: datetime
    ) -> None:
        """Record where ``monitor`` stands; its watermark never moves back."""
        self._db.execute(
            "INSERT INTO {p}monitors (name, watermark, lag, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET watermark = CASE "
            "WHEN {p}monitors.watermark IS NULL THEN excluded.watermark "
            "WHEN excluded.watermark IS NULL THEN {p}monitors.watermark "
            "WHEN excluded.watermark > {p}monitors.watermark THEN excluded.watermark "
            "ELSE {p}monitors.watermark END, lag = excluded.lag, updated = excluded.updated, "
            "stopped = NULL",
            monitor,
            _epoch(watermark),
            lag if lag != float("inf") else -1.0,
            at.timestamp(),
        )

    def record_stopped(self, monitor: str, at: datetime) -> None:
        """Record that ``monitor`` stopped cleanly at ``at`` (until it records again)."""
        self._db.execute(
            "UPDATE {p}monitors SET stopped = ? WHERE name = ?", at.timestamp(), monitor
        )

    def monitors(self) -> list[MonitorStatus]:
        """What each monitor recorded last."""
        rows = self._db.query(
            "SELECT name, watermark, lag, updated, stopped FROM {p}monitors ORDER BY name"
        )
        return [
            MonitorStatus(
                row[0],
                _moment(row[1]),
                float(row[2]) if row[2] is not None and row[2] >= 0 else float("inf"),
                _moment(row[3]) or datetime.fromtimestamp(0, UTC),
                _moment(row[4]),
            )
            for row in rows
        ]

    def drop_schema(self) -> None:
        """Drop the PostgreSQL schema and everything in it (for tests and resets)."""
        self._db.drop_schema()

    def interrupt(self, thread: int) -> None:
        """Cancel the statement ``thread`` runs (see :meth:`broker.sqlstore.SqlStore.interrupt`);
        its transaction is undone and raises :class:`SagaStoreError`."""
        self._db.interrupt(thread)

    def release(self) -> None:
        """Close the calling thread's connection (the monitor's apply thread, at its end)."""
        self._db.release()

    def close(self) -> None:
        """Close the connections."""
        self._db.close()


class _SqlTransaction:
    def __init__(self, store: SqlSagaStore, tx: Tx) -> None:
        self._store, self._tx = store, tx
        #: Instances put in this transaction, written by :meth:`write` before the commit.
        self._dirty: dict[tuple[str, str], Instance] = {}
        self._locked: set[tuple[str, str]] = set()
        #: Keys :meth:`prefetch` found no row for (SQLite, where this monitor is the writer).
        self._absent: set[tuple[str, str]] = set()

    def get(self, saga: str, correlation_id: str) -> Instance | None:
        key = (saga, correlation_id)
        if (dirty := self._dirty.get(key)) is not None:
            return dirty
        lock = self._store.lock_instance
        if lock is not None and key not in self._locked:  # whether or not it exists yet
            self._tx.one(lock, f"{saga}\x1f{correlation_id}")
            self._locked.add(key)
        cache = self._store.cache
        if cache is not None and (cached := cache.get((saga, correlation_id))) is not None:
            cache.move_to_end((saga, correlation_id))
            return cached
        if key in self._absent or self._store.whole_table:
            return None
        row = self._tx.one(self._store.select_instance, saga, correlation_id)
        instance = Instance.from_dict(json.loads(row[0])) if row else None
        if instance is not None:
            self._store.remember(instance)
        return instance

    def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read the instances of ``keys`` that are not in the cache, a query per saga and up
        to :data:`_IN_MAX` keys (SQLite, whose cache this monitor alone keeps up to date; a
        shared store reads each instance under its lock instead). A new saga's instance, one
        per start event, then costs no query of its own."""
        store = self._store
        cache = store.cache
        if store.lock_instance is not None:  # shared: lock them all first, in one order
            self._lock_all(keys)
            return
        if cache is None or store.whole_table:
            return
        by_saga: dict[str, dict[str, None]] = {}
        dirty, absent = self._dirty, self._absent
        for key in keys:
            if key not in cache and key not in dirty and key not in absent:
                by_saga.setdefault(key[0], {})[key[1]] = None
        for saga, ids in by_saga.items():
            wanted, found = list(ids), set()
            for start in range(0, len(wanted), _IN_MAX):
                chunk = wanted[start : start + _IN_MAX]
                size = _IN_MAX if len(chunk) > _IN_MAX // 2 else 1 << (len(chunk) - 1).bit_length()
                chunk += [chunk[-1]] * (size - len(chunk))  # a few statement texts, all cached
                rows = self._tx.all(_select_in(size), saga, *chunk)
                for correlation_id, doc in rows:
                    store.remember(Instance.from_dict(json.loads(doc)))
                    found.add(correlation_id)
            absent.update((saga, c) for c in wanted if c not in found)

    def _lock_all(self, keys: Iterable[tuple[str, str]]) -> None:
        """Take the locks of ``keys`` (PostgreSQL) in the order of their lock numbers, in one
        statement: two monitors (a tick judging in deadline order, a batch in the order its
        events came) locking the same instances in their own orders could each hold what the
        other waits for (a deadlock, which PostgreSQL breaks by failing one of them)."""
        wanted = {key: None for key in keys if key not in self._locked}
        if wanted:
            self._tx.one(_LOCK_ALL, [f"{saga}\x1f{corr}" for saga, corr in wanted])
            self._locked.update(wanted)

    def put(self, instance: Instance) -> None:
        self._store.remember(instance)
        self._dirty[(instance.saga, instance.correlation_id)] = instance

    def write(self) -> None:
        """Write every instance put in this transaction, once each."""
        dirty, self._dirty = self._dirty, {}
        if dirty:
            self._tx.execute_many(_PUT, [_row(instance) for instance in dirty.values()])

    def find_orphan(self, saga: str, correlation_id: str, key: str) -> Observation | None:
        known = self._store.orphaned
        if known is not None and (saga, correlation_id) not in known:
            return None
        row = self._tx.one(
            "SELECT doc FROM {p}orphans WHERE saga = ? AND correlation_id = ? AND event_key = ?",
            saga,
            correlation_id,
            key,
        )
        return obs_from(row[0]) if row else None

    def add_orphan(self, saga: str, correlation_id: str, obs: Observation, key: str) -> bool:
        known = self._store.orphaned
        if known is not None:
            known.add((saga, correlation_id))
        return 0 < self._tx.run(
            "INSERT INTO {p}orphans (saga, correlation_id, event_key, time, doc) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            saga,
            correlation_id,
            key,
            obs.time.timestamp(),
            obs_doc(obs),
        )

    def take_orphans(self, saga: str, correlation_id: str) -> list[tuple[Observation, bool]]:
        known = self._store.orphaned
        if known is not None:
            if (saga, correlation_id) not in known:
                return []
            known.discard((saga, correlation_id))
        rows = self._tx.all(
            "SELECT doc, reported FROM {p}orphans WHERE saga = ? AND correlation_id = ? "
            "ORDER BY time",
            saga,
            correlation_id,
        )
        if rows:
            self._tx.execute(
                "DELETE FROM {p}orphans WHERE saga = ? AND correlation_id = ?", saga, correlation_id
            )
        return [(obs_from(row[0]), bool(row[1])) for row in rows]

    def mark_orphans_reported(self, keys: list[tuple[str, str, str]]) -> None:
        for saga, correlation_id, key in keys:
            self._tx.execute(
                "UPDATE {p}orphans SET reported = 1 WHERE saga = ? AND correlation_id = ? "
                "AND event_key = ?",
                saga,
                correlation_id,
                key,
            )

    def drop_orphans(self, keys: list[tuple[str, str, str]]) -> None:
        for saga, correlation_id, key in keys:
            self._tx.execute(
                "DELETE FROM {p}orphans WHERE saga = ? AND correlation_id = ? AND event_key = ?",
                saga,
                correlation_id,
                key,
            )

    def add_alerts(self, alerts: list[Alert]) -> None:
        if alerts:
            self._tx.execute_many(
                "INSERT INTO {p}alerts (doc) VALUES (?)",
                [(json.dumps(alert.to_dict()),) for alert in alerts],
            )


def _row(instance: Instance) -> tuple[Any, ...]:
    """The column values of an instance row (``due``: when to judge it again, if ever;
    ``anomalies`` and ``awaiting``: ``,a,b,`` lists the filters match with LIKE)."""
    return (
        instance.saga,
        instance.correlation_id,
        instance.state,
        _epoch(instance.started),
        _epoch(instance.updated),
        _epoch(instance.check_at),
        _epoch(instance.finished),
        instance.to_json(),
        _epoch(instance.stuck_since) if instance.state == "stuck" else None,
        _listed(sorted({a.kind for a in instance.anomalies})),
        _listed(awaited(instance)),
    )


@functools.lru_cache(maxsize=16)
def _select_in(size: int) -> str:
    """The instances of one saga with any of ``size`` correlation ids."""
    marks = ",".join("?" * size)
    return (
        "SELECT correlation_id, doc FROM {p}instances WHERE saga = ? "
        f"AND correlation_id IN ({marks})"
    )


def _listed(values: list[str]) -> str | None:
    return f",{','.join(values)}," if values else None


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped (``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(query: Query) -> tuple[list[str], list[Any]]:
    """The SQL conditions and parameters of a query."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (("saga", query.saga), ("state", query.state)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        where.append("updated >= ?")
        params.append(query.since.timestamp())
    if query.correlation_prefix:
        where.append("substr(correlation_id, 1, ?) = ?")
        params += [len(query.correlation_prefix), query.correlation_prefix]
    if query.anomaly is not None:
        where.append("anomalies IS NOT NULL AND anomalies LIKE ? ESCAPE '\\'")
        params.append(f"%,{_like(query.anomaly)},%")
    if query.awaiting is not None:
        alternatives = ["awaiting LIKE ? ESCAPE '\\'" for _ in query.awaiting] or ["1 = 0"]
        where.append(f"({' OR '.join(alternatives)})")
        params += [f"%,{_like(t)},%" for t in query.awaiting]
    if query.acknowledged is not None:
        where.append(_ACKED if query.acknowledged else f"NOT {_ACKED}")
    if query.data is not None:  # the pre-filter: the value's JSON text is in the document
        fragment = json.dumps(query.data.value)[1:-1]
        where.append("doc LIKE ? ESCAPE '\\'")
        params.append(f"%{_like(fragment)}%")
    return where, params


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _moment(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch is not None else None


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
