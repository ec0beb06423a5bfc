"""A sharded step (data x fsdp x tensor = 2x2x2 on 8 CPU devices) and a two-process run (jax.distributed over gloo)
equal the single-device step, for full fine-tuning, LoRA and Bitune."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_worker(tmp_path, name, mesh, kinds, devices, process_id=None, num_processes=1, port=0):
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, "-m", "tests.train.sharded_step_worker", "--out", str(out), "--mesh", mesh,
           "--kinds", kinds]
    if num_processes > 1:
        cmd += ["--process_id", str(process_id), "--num_processes", str(num_processes), "--port", str(port)]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out


def finish(proc_out):
    proc, out = proc_out
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.read_text())


def assert_same(a, b, atol):
    np.testing.assert_allclose(a["losses"], b["losses"], atol=atol, rtol=0)
    for x, y in zip(a["params"], b["params"], strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return finish(run_worker(tmp_path_factory.mktemp("single"), "single", "1,1,1", "full,peft,bitune", 8))


def test_2x2x2_mesh_equals_single_device(single, tmp_path):
    sharded = finish(run_worker(tmp_path, "sharded", "2,2,2", "full,peft,bitune", 8))
    for kind in ("full", "peft", "bitune"):
        assert sharded[kind]["sharded_leaves"] > 0 and single[kind]["sharded_leaves"] == 0
        assert_same(sharded[kind], single[kind], atol=1e-5)


def test_two_processes_over_gloo_equal_single_process(single, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [run_worker(tmp_path, f"p{i}", "2,2,2", "full,peft", 4, i, 2, port) for i in range(2)]
    results = [finish(p) for p in procs]
    for r in results:
        for kind in ("full", "peft"):
            assert r[kind]["processes"] == 2 and r[kind]["devices"] == 8
            assert_same(r[kind], single[kind], atol=1e-5)
