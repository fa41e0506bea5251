"""The embedded broker's leases: a member whose process is provably dead loses them at once, a
live member (even a stopped one) never does before its visibility timeout, and a member that
cannot be checked (another host, another container, an older version) waits it out as well."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from broker import Bus
from broker.adapters.sqlite.owner import holder_of, new_member_id, provably_dead, this_process
from tests.helpers import Collector

pytestmark = pytest.mark.skipif(this_process() is None, reason="needs Linux /proc")

ROOT = Path(__file__).resolve().parents[2]
TOPIC, GROUP, PARTITIONS = "work", "shared", 8


# -- processes -------------------------------------------------------------------------------


class Member:
    """A member process (``tests/brokers/sqlite_member.py``) and what it wrote."""

    def __init__(self, url: str, sink: Path, hold: bool) -> None:
        self.sink = sink
        command = ["-m", "tests.brokers.sqlite_member", url, TOPIC, GROUP, str(sink)]
        with open(sink.with_suffix(".log"), "wb") as log:  # its log lines, for a failure
            self.process = subprocess.Popen(
                [sys.executable, *command, *(["hold"] if hold else [])],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def lines(self) -> list[dict[str, object]]:
        if not self.sink.exists():
            return []
        text = self.sink.read_text()
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def joined(self) -> float | None:
        return next((float(str(n["joined"])) for n in self.lines() if "joined" in n), None)

    def handled(self) -> list[str]:
        return [str(n["id"]) for n in self.lines() if "id" in n]

    def holding(self) -> bool:
        return any("holding" in n for n in self.lines())

    def handled_at(self) -> list[float]:
        return [float(str(n["at"])) for n in self.lines() if "at" in n]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Callable[..., Member]]:
    """Starts member processes (``hold=True``: stuck on events whose data is "hold")."""
    started: list[Member] = []

    def start(url: str, name: str, *, hold: bool = False) -> Member:
        member = Member(url, tmp_path / f"{name}.jsonl", hold)
        started.append(member)
        return member

    yield start
    for member in started:
        member.stop()


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _owners(path: Path) -> dict[int, int | None]:
    """Partition -> pid of the member leasing it (None when free or lapsed)."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT part, owner, lease_until FROM offsets WHERE topic=? AND grp=?", (TOPIC, GROUP)
        ).fetchall()
    now = time.time()
    found: dict[int, int | None] = {}
    for part, owner, until in rows:
        holder = holder_of(owner) if owner and until >= now else None
        found[part] = holder.pid if holder else None
    return found


def _all_committed(path: Path) -> bool:
    """Whether the group's committed position is at the end of every partition."""
    with closing(sqlite3.connect(path)) as db:
        behind = db.execute(
            "SELECT count(*) FROM offsets o WHERE o.committed < (SELECT coalesce(max(seq), 0)"
            " FROM log WHERE log.topic=o.topic AND log.part=o.part)"
        ).fetchone()[0]
    return behind == 0


def _heartbeat(path: Path, pid: int) -> float:
    """The last heartbeat of the member in process ``pid``."""
    with closing(sqlite3.connect(path)) as db:
        beats = [
            float(beat)
            for member, beat in db.execute("SELECT member, heartbeat FROM members")
            if (holder := holder_of(member)) is not None and holder.pid == pid
        ]
    return max(beats, default=0.0)


async def _publish(url: str, datas: list[object], key: str = "k") -> list[str]:
    """Publish one event per data (keys ``<key><n>``, or ``key`` itself for a single one)."""
    async with Bus(url) as bus:
        await bus.create_topic(TOPIC, partitions=PARTITIONS)
        keys = [key] if len(datas) == 1 and key != "k" else [f"{key}{n}" for n in range(len(datas))]
        return [
            (await bus.publish(TOPIC, type="job", data=d, key=k)).id
            for d, k in zip(datas, keys, strict=True)
        ]


# -- who is provably dead ----------------------------------------------------------------------


def test_a_member_id_names_its_process() -> None:
    """A member id carries this process's host, pid, start time and machine, and this process
    is not dead."""
    member = new_member_id()
    assert this_process() == holder_of(member)
    assert not provably_dead(member)


def test_exited_zombie_and_reused_pids_are_dead() -> None:
    """A member whose process exited (reaped or still a zombie), or whose pid now belongs to a
    process started at another time, is provably dead; a running one is not."""
    code = "from broker.adapters.sqlite.owner import new_member_id as m; print(m(), flush=True)"
    child = subprocess.Popen(
        [sys.executable, "-c", f"{code}; import sys; sys.stdin.read()"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    member = child.stdout.readline().decode().strip()
    assert not provably_dead(member)
    os.kill(child.pid, signal.SIGKILL)
    _wait(lambda: provably_dead(member), 10, "the zombie to count as dead")
    child.wait(10)
    child.stdin.close()
    child.stdout.close()
    assert provably_dead(member)
    me = this_process()
    assert me is not None
    assert provably_dead(f"1.0-x@{me.host}:{me.pid}:{me.started + 1}:{me.machine}")


def test_members_that_cannot_be_checked_are_alive() -> None:
    """Another machine's (or container's) member, and an id without a process (an older
    version), are never taken for dead, whatever their pid."""
    me = this_process()
    assert me is not None
    assert not provably_dead(f"1.0-x@{me.host}:{2**22 + 7}:1:{'0' * 16}")
    assert not provably_dead("1700000000.000000-abcdef12")
    assert holder_of("1700000000.000000-abcdef12") is None


async def test_a_rebalance_frees_only_the_leases_of_dead_members(tmp_path: Path) -> None:
    """A new member takes at once the partitions leased by a dead process on this machine, and
    leaves those leased by a member it cannot check until their lease lapses."""
    path = tmp_path / "broker.db"
    url = f"sqlite:///{path}?partitions={PARTITIONS}&poll_interval=0.02"
    me = this_process()
    assert me is not None
    far = 4_194_301  # a pid on another machine: it says nothing here
    dead = f"1.0-dead@{me.host}:{me.pid}:{me.started + 1}:{me.machine}"  # pid reused since
    foreign = f"1.0-far@elsewhere:{far}:1:{'0' * 16}"
    async with Bus(url) as bus:
        await bus.create_topic(TOPIC, partitions=PARTITIONS)
        setup = await bus.subscribe(TOPIC, Collector(), group=GROUP)
        await setup.stop()
    with closing(sqlite3.connect(path)) as db, db:  # what two other processes left there
        now = time.time()
        for part in range(PARTITIONS):
            db.execute(
                "UPDATE offsets SET owner=?, lease_until=? WHERE topic=? AND grp=? AND part=?",
                (dead if part % 2 else foreign, now + 30, TOPIC, GROUP, part),
            )
        db.executemany(
            "INSERT INTO members VALUES (?, ?, ?, ?)",
            [(TOPIC, GROUP, dead, now), (TOPIC, GROUP, foreign, now)],
        )
    async with Bus(url) as bus:
        await bus.subscribe(TOPIC, Collector(), group=GROUP)
        with closing(sqlite3.connect(path)) as db:
            leases = dict(db.execute("SELECT part, owner FROM offsets WHERE lease_until > 0"))
            members = {m for (m,) in db.execute("SELECT member FROM members")}
    [new] = members - {foreign}
    # The live split is (foreign, new member): the new one is due the odd partitions, which
    # the dead member held, and gets them now; the foreign member keeps the even ones.
    assert {p: new if p % 2 else foreign for p in range(PARTITIONS)} == leases


# -- across processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_members_partitions_go_to_a_new_member_at_once(
    tmp_path: Path, members: Callable[..., Member]
) -> None:
    """kill -9 of the member holding every partition, mid-event: a new member in another
    process gets the partitions at once, not after the 30 s visibility timeout, and every
    event is handled."""
    path = tmp_path / "broker.db"
    url = f"sqlite:///{path}?poll_interval=0.02"  # visibility_timeout: the default 30 s
    sent = asyncio.run(_publish(url, [*range(20), "hold", *range(20)]))
    victim = members(url, "victim", hold=True)
    _wait(victim.holding, 60, "the victim to hold an event")
    assert {victim.pid} == set(_owners(path).values())
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(30)
    survivor = members(url, "survivor")
    _wait(lambda: set(sent) <= set(victim.handled() + survivor.handled()), 15, "every event")
    joined = survivor.joined()
    assert joined is not None
    took = max(survivor.handled_at()) - joined
    assert took < 5.0, f"the new member needed {took:.1f}s after joining"
    assert {survivor.pid} == set(_owners(path).values())


@pytest.mark.slow
def test_a_live_member_keeps_its_leases(tmp_path: Path, members: Callable[..., Member]) -> None:
    """Two live member processes keep their share, also when one of them gets stuck on an
    event (and so stops renewing its leases): the other takes none of its partitions while
    its process lives, and all of them at once when it is killed; no event is handled twice."""
    path = tmp_path / "broker.db"
    url = f"sqlite:///{path}?poll_interval=0.02"
    asyncio.run(_publish(url, []))
    first = members(url, "first", hold=True)
    _wait(first.joined, 60, "the first to join")
    second = members(url, "second")

    def split() -> bool:
        half = PARTITIONS // 2
        return Counter({first.pid: half, second.pid: half}) == Counter(_owners(path).values())

    _wait(split, 60, "the partitions to be split")
    shares = _owners(path)
    sent = asyncio.run(_publish(url, list(range(40))))
    _wait(lambda: set(sent) <= set(first.handled() + second.handled()), 30, "both shares")
    _wait(lambda: _all_committed(path), 30, "the commits")  # a crash now loses no ack
    assert first.handled()
    assert second.handled()
    mine = {p for p, pid in shares.items() if pid == first.pid}
    key = next(f"h{n}" for n in range(1000) if zlib.crc32(f"h{n}".encode()) % PARTITIONS in mine)
    [held] = asyncio.run(_publish(url, ["hold"], key))
    _wait(first.holding, 30, "the first to be stuck on an event")
    stuck = time.time()
    late = asyncio.run(_publish(url, list(range(40)), "late"))
    _wait(lambda: _heartbeat(path, second.pid) > stuck + 2.5, 30, "two more rebalances")
    assert shares == _owners(path)
    assert held not in second.handled()
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(30)
    killed = time.time()
    _wait(lambda: {held, *late} <= set(first.handled() + second.handled()), 15, "the rest")
    assert max(second.handled_at()) - killed < 5.0
    assert sorted([*sent, held, *late]) == sorted(first.handled() + second.handled())
