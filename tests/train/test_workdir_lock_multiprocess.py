"""The workdir lock of a two-process run (gloo): process 0 holds it, process 1 checks it, and a refusal or a
workdir that is not shared stops both processes with a message instead of leaving one at a collective."""

import json
import os
import socket
import subprocess
import sys

import pytest

from bitune_jax.train.workdir_lock import LOCK_NAME

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(tmp_path, workdirs):
    port, procs = free_port(), []
    for i, workdir in enumerate(workdirs):
        cmd = [
            sys.executable,
            "-m",
            "tests.train.lock_worker",
            "--workdir",
            str(workdir),
            "--out",
            str(tmp_path / f"p{i}.json"),
            "--process_id",
            str(i),
            "--port",
            str(port),
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, "JAX_PLATFORMS": "cpu"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    return [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]


def test_process_zero_holds_the_lock_and_process_one_sees_it(tmp_path):
    workdir = tmp_path / "run"
    first, second = two_processes(tmp_path, [workdir, workdir])
    assert first["entered"] and second["entered"]
    assert not first["lock_after"] and not (workdir / LOCK_NAME).exists()  # released by its holder


def test_a_workdir_in_use_stops_both_processes(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / LOCK_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "earlier", "token": 7})
    )
    first, second = two_processes(tmp_path, [workdir, workdir])
    assert f"in use by pid {os.getpid()}" in first["error"]
    assert "process 0 could not lock" in second["error"]
    assert json.loads((workdir / LOCK_NAME).read_text())["token"] == 7  # the owner's lock untouched


def test_a_workdir_that_is_not_shared_is_refused_on_the_other_process(tmp_path):
    first, second = two_processes(tmp_path, [tmp_path / "a", tmp_path / "b"])
    assert "processes [1] do not see the workdir lock" in first["error"]
    assert "process 1 sees no lock file" in second["error"] and "shared file system" in second["error"]
    assert not first["lock_after"]  # released
