"""The workdir lock: one owner at a time, a clear refusal naming the owner, stale locks reclaimed."""

import json
import os
import subprocess
import sys
import time

import pytest

from bitune_jax.train.workdir_lock import LOCK_NAME, WorkdirLock, WorkdirLockedError


def test_second_owner_is_refused_naming_the_first(tmp_path):
    with WorkdirLock(tmp_path):
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid()
        with pytest.raises(WorkdirLockedError, match=rf"in use by pid {os.getpid()} on .* lock file"):
            WorkdirLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # released
    with WorkdirLock(tmp_path):  # and free again
        pass


def test_lock_of_a_dead_process_on_this_host_is_reclaimed(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    with WorkdirLock(tmp_path):  # written by us, then rewritten as the dead process's
        lock = json.loads((tmp_path / LOCK_NAME).read_text())
    (tmp_path / LOCK_NAME).write_text(json.dumps({**lock, "pid": pid}))
    with WorkdirLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "reclaiming the stale lock" in capsys.readouterr().out


def test_lock_without_heartbeat_from_another_host_is_reclaimed(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then"}))
    with pytest.raises(WorkdirLockedError, match="pid 1 on elsewhere"):  # fresh: its owner may be alive
        WorkdirLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with WorkdirLock(tmp_path, stale_after_s=300):
        pass


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    with WorkdirLock(tmp_path, heartbeat_s=0.05):
        old = time.time() - 3600
        os.utime(tmp_path / LOCK_NAME, (old, old))
        time.sleep(0.3)
        assert time.time() - (tmp_path / LOCK_NAME).stat().st_mtime < 60


@pytest.mark.parametrize("text", ["[1, 2]", '{"host": "h", "pid": "twelve"}', '"a string"', "{cut"])
def test_a_malformed_lock_is_judged_by_its_age_not_crashed_on(tmp_path, text):
    """A lock file that is not an owner record (edited by hand, cut by a kill): refused while fresh, with the
    lock named; reclaimed once stale."""
    (tmp_path / LOCK_NAME).write_text(text)
    with pytest.raises(WorkdirLockedError, match=rf"in use by pid .* on .*lock file {tmp_path / LOCK_NAME}"):
        WorkdirLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with WorkdirLock(tmp_path, stale_after_s=300):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
