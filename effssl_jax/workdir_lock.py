"""One run per workdir: WORKDIR/.lock, held by the run's process 0 for the whole run.

The lock file is created atomically (storage.create: O_CREAT | O_EXCL locally, a create-if-absent
precondition in a bucket) and holds {pid, host, started}. A second run on the same workdir fails
with a UserError naming the holder; a lock left by a process that died (same host, pid no longer
alive) is taken over with a warning. The lock is released (deleted, if it is still ours) when the
run ends, however it ends.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import time

from effssl_jax import storage
from effssl_jax.errors import UserError

LOCK_NAME = ".lock"


def lock_path(workdir: str) -> str:
    return storage.join(workdir, LOCK_NAME)


def _read(path: str) -> dict | None:
    """The holder's record; None if the file is gone. A file that stays unparsable (a holder that
    died between creating and writing it) reads as {} after a short grace period."""
    for attempt in range(3):
        try:
            text = storage.read_text(path)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            if isinstance(holder, dict):
                return holder
        except json.JSONDecodeError:
            pass
        time.sleep(0.1 * (attempt + 1))  # a local holder may be between open() and write()
    return {}


def _alive(pid) -> bool:
    """Whether a process of this host with this pid exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _stale(holder: dict, host: str) -> bool:
    """A lock nobody holds: unreadable, or of this host with a pid that is not alive."""
    return not holder or (holder.get("host") == host and not _alive(holder.get("pid")))


def acquire(workdir: str) -> dict:
    """Creates WORKDIR/.lock for this process; returns what it wrote. Raises UserError if another
    live process holds it; takes over (with a warning) a lock whose holder has died."""
    path, host = lock_path(workdir), socket.gethostname()
    mine = {"pid": os.getpid(), "host": host,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    while not storage.create(path, json.dumps(mine)):
        holder = _read(path)
        if holder is None:
            continue  # released meanwhile: try again
        if not _stale(holder, host):
            msg = (f"workdir {workdir} is in use by pid {holder.get('pid')} on "
                   f"{holder.get('host')} (since {holder.get('started')}); wait for it or use "
                   "another --workdir")
            if holder.get("host") != host:
                msg += f" (if that run is gone, delete {path})"
            raise UserError(msg) from None
        if _read(path) != holder:
            continue  # someone else took it over meanwhile: look again
        logging.warning("taking over %s: its holder (pid %s on %s, since %s) is no longer "
                        "running", path, holder.get("pid"), holder.get("host"),
                        holder.get("started"))
        storage.remove(path)
    return mine


def release(workdir: str, mine: dict) -> None:
    """Deletes WORKDIR/.lock if it is still the one `acquire` wrote."""
    path = lock_path(workdir)
    if _read(path) == mine:
        storage.remove(path)


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
    """WORKDIR/.lock held for the block (enabled: this is the run's process 0)."""
    if not enabled:
        yield
        return
    mine = acquire(workdir)
    try:
        yield
    finally:
        release(workdir, mine)
