"""Weights load straight into their shardings: each device's shard is read slice by slice from the safetensors
files (never a whole sharded tensor, never the whole model on one device), values equal to the host load, on an
8-device mesh and across two processes over gloo, where each process reads only what its own devices hold."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def olmo3(tmp_path_factory):
    from tests.hf_tiny import write_tiny  # imports torch: here, so that collecting the unit tier does not

    path = tmp_path_factory.mktemp("olmo3")
    write_tiny("olmo3", path)
    return path


def start(model, out, mesh, devices, process_id=0, num_processes=1, port=0):
    cmd = [
        sys.executable,
        "-m",
        "tests.checkpoints.sharded_load_worker",
        "--model",
        str(model),
        "--mesh",
        mesh,
        "--out",
        str(out),
    ]
    if num_processes > 1:
        cmd += ["--process_id", str(process_id), "--num_processes", str(num_processes), "--port", str(port)]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc, out):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.read_text())


def test_eight_devices_read_only_their_shards(olmo3, tmp_path):
    out = tmp_path / "r.json"
    result = finish(start(olmo3, out, "1,2,2,2", 8), out)  # fsdp x sequence x tensor: 4-way ZeRO-3, 2-way TP
    assert result["whole_reads"] == []
    params = result["params"]
    sharded = [p for p, r in params.items() if not r["fully_replicated"]]
    assert {"embed", "lm_head", "layers/q_proj", "layers/down_proj"} <= set(sharded)
    for path, r in params.items():
        assert r["equal"], path
        if not r["fully_replicated"]:
            assert r["max_read_fraction"] <= 0.5, (path, r)  # a shard of one layer at a time, never the tensor
    assert params["layers/q_proj"]["spec"] == "P(None, ('fsdp', 'sequence'), 'tensor')"
    assert params["layers/q_proj"]["max_read_fraction"] == pytest.approx(1 / 8)


def test_two_processes_each_read_their_own_half(olmo3, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [start(olmo3, outs[i], "1,8,1,1", 4, process_id=i, num_processes=2, port=port) for i in range(2)]
    results = [finish(p, o) for p, o in zip(procs, outs)]
    for r in results:
        assert r["processes"] == 2 and r["whole_reads"] == []
        for path, p in r["params"].items():
            assert p["equal"], path
            if p["fully_replicated"]:  # read once per process, not once per device
                assert p["elements_read"] == p["global_elements"], (path, p)
            else:  # exactly the elements of this process's own devices' shards: half the tensor
                assert p["elements_read"] == p["addressable_elements"] == p["global_elements"] // 2, (path, p)
