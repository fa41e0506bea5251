"""Who holds a lease: member ids that name their process, so that a new member can tell that a
holder is dead instead of waiting for its lease to lapse.

A member id reads ``<time>-<random>@<host>:<pid>:<start>:<machine>``: ``start`` is the
process's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``) and
``machine`` a digest of the kernel's boot id and the process's pid namespace, i.e. of what gives
a pid its meaning. A holder is **provably dead** only when

* its ``machine`` is this process's (same host, same boot, same pid namespace), and
* its pid no longer exists, is a zombie, or belongs to a process that started at another time
  (the pid was reused).

Anything else counts as alive, and its leases lapse after ``visibility_timeout`` as before: a
member on another host sharing the file over a network filesystem, in another container, on a
system without ``/proc`` (so also on macOS and Windows), a process this one may not inspect, or
an id without the suffix (written by an older version). A holder that is alive but stuck (a
hung handler, a stopped process) is never taken from: only the visibility timeout does that.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import socket
import time
import uuid

__all__ = ["Holder", "holder_of", "new_member_id", "provably_dead", "this_process"]

_SUFFIX = re.compile(r"@([A-Za-z0-9._-]*):(\d+):(\d+):([0-9a-f]{16})\Z")
_PROC = "/proc"


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """The process behind a member id."""

    host: str
    pid: int
    started: int  # clock ticks since boot
    machine: str  # digest of boot id and pid namespace


def _start_state(pid: int) -> tuple[int, str] | None:
    """``(start time in ticks, state letter)`` of ``pid`` from /proc, or None if unreadable."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and parens
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


@functools.cache
def _identity(pid: int) -> Holder | None:
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()
        namespace = os.readlink(f"{_PROC}/self/ns/pid")
    except OSError:
        return None
    found = _start_state(pid)
    if not boot_id or found is None:
        return None
    machine = hashlib.sha256(f"{boot_id}|{namespace}".encode()).hexdigest()[:16]
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64]
    return Holder(host, pid, found[0], machine)


def this_process() -> Holder | None:
    """This process as a lease holder (None where it cannot be told apart: no /proc)."""
    return _identity(os.getpid())


def new_member_id() -> str:
    """A fresh member id; it names this process when :func:`this_process` can."""
    base = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
    me = this_process()
    if me is None:
        return base
    return f"{base}@{me.host}:{me.pid}:{me.started}:{me.machine}"


def holder_of(member: str) -> Holder | None:
    """The process a member id names, if it names one."""
    match = _SUFFIX.search(member)
    if match is None:
        return None
    host, pid, started, machine = match.groups()
    return Holder(host, int(pid), int(started), machine)


def provably_dead(member: str) -> bool:
    """Whether ``member``'s process is certainly gone (see the module docstring)."""
    me, holder = this_process(), holder_of(member)
    if me is None or holder is None or holder.machine != me.machine or holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)  # signal 0 only checks (only reached where /proc exists)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    found = _start_state(holder.pid)
    if found is None:
        return False  # exists but hidden (hidepid) or just exited: cannot tell
    started, state = found
    return state in ("Z", "X") or started != holder.started
