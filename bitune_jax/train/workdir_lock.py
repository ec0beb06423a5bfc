"""An exclusive lock on a run's workdir, so two runs (a requeued cluster job beside its old copy) never interleave
their logs or race on checkpoints.

The lock is a file, `workdir/run.lock`, created atomically, holding the owner's host, pid and start time, and
touched every `heartbeat_s` by a daemon thread. A lock is stale, and reclaimed with a message, when its owner is a
dead process on this host or its heartbeat stopped more than `stale_after_s` ago (the owner's host died). Any other
lock is a refusal naming its owner.

Multi-host (`hold_workdir`): process 0 takes the lock and tells every process whether it did, with the lock's
random token; each other process then reads the lock file and checks it holds that token, so a refusal stops every
process (none waits forever at a collective) and a workdir that is not one shared directory is caught up front.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np

LOCK_NAME = "run.lock"


class WorkdirLockedError(RuntimeError):
    """Another live run owns this workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class WorkdirLock:
    def __init__(self, workdir: str | pathlib.Path, *, heartbeat_s: float = 30.0, stale_after_s: float = 300.0):
        self.path = pathlib.Path(workdir) / LOCK_NAME
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "token": secrets.randbits(30) + 1,
        }  # int32: what a broadcast carries

    @property
    def token(self) -> int:
        """A random number naming this holder (never 0), which the other processes of the run check."""
        return self._owner["token"]

    def _stale_reason(self, owner: dict) -> str | None:
        pid = owner.get("pid")
        if owner.get("host") == self._owner["host"] and isinstance(pid, int) and not _alive(pid):
            return f"its process {owner.get('pid')} on this host is gone"
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "it was released meanwhile"
        if age > self.stale_after_s:
            return f"its heartbeat stopped {age:.0f} s ago"
        return None

    def acquire(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(self.path)  # {} when being written, cut by a kill or edited: judged by age
                reason = self._stale_reason(owner)
                if reason is None:
                    raise WorkdirLockedError(
                        f"{self.path.parent} is in use by pid {owner.get('pid', '?')} on {owner.get('host', '?')} "
                        f"since {owner.get('started', '?')} (lock file {self.path}). Wait for that run to finish or "
                        "stop it; if it is dead on another host, delete the lock file."
                    ) from None
                print(
                    f"reclaiming the stale lock {self.path} of pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}: {reason}",
                    flush=True,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._owner, f)
            self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
            self._thread.start()
            return self
        raise WorkdirLockedError(f"{self.path}: could not take the lock (another run keeps taking it)")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            try:
                if json.loads(self.path.read_text()) == self._owner:
                    self.path.unlink()
            except (OSError, json.JSONDecodeError):
                pass

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def hold_workdir(workdir: str | pathlib.Path) -> Iterator[None]:
    """The workdir lock for the whole run: process 0 holds it, every other process checks it (see the module)."""
    if jax.process_count() == 1:
        with WorkdirLock(workdir):
            yield
        return
    from jax.experimental import multihost_utils

    lock, failure = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire()
        except WorkdirLockedError as e:
            failure = e
    token = int(multihost_utils.broadcast_one_to_all(np.int32(lock.token if lock else 0)))
    problem = failure
    if problem is None and token == 0:
        problem = WorkdirLockedError(f"process 0 could not lock {pathlib.Path(workdir)} (its error says why)")
    if problem is None and lock is None:
        try:
            _check_lock(pathlib.Path(workdir) / LOCK_NAME, token)
        except WorkdirLockedError as e:
            problem = e
    # every process learns every check's outcome before any goes on (and process 0 releases only after)
    fine = np.asarray(multihost_utils.process_allgather(np.int32(problem is None))).reshape(-1)
    try:
        if problem is not None:
            raise problem
        if not fine.all():
            raise WorkdirLockedError(
                f"processes {np.flatnonzero(fine == 0).tolist()} do not see the workdir lock "
                f"{pathlib.Path(workdir) / LOCK_NAME} that process 0 took (their errors say why)"
            )
        yield
    finally:
        if lock is not None:
            lock.release()


def _read_owner(path: pathlib.Path) -> dict:
    """The lock file's owner record; {} for a file that is not one (half written, cut, edited by hand)."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _check_lock(path: pathlib.Path, token: int) -> None:
    owner = _read_owner(path) if path.exists() else None
    if owner is None or owner.get("token") != token:
        seen = "no lock file" if owner is None else f"a lock of pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        raise WorkdirLockedError(
            f"process {jax.process_index()} sees {seen} at {path}, not the lock process 0 took: every process of a "
            "run must see the same workdir (a shared file system)"
        )
