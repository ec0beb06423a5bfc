"""Sharded steps equal the single-device step (loss, token accuracy, updated parameters within 1e-5, float32) for
full fine-tuning, LoRA and Bitune: a data x fsdp x tensor = 2x2x2 mesh, sequence parallelism (one 512-token row
split over 8 devices) with the dense XLA, blockwise XLA and Pallas (interpret) attention, a batch of 3 rows padded
to a 2-row multiple, and two processes over gloo (jax.distributed) for both layouts."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = "full,peft,bitune"


def run_worker(
    tmp_path,
    name,
    mesh,
    devices,
    *,
    kinds=KINDS,
    rows=8,
    seq=16,
    attn="xla",
    packed=False,
    sgd=False,
    process_id=None,
    num_processes=1,
    port=0,
):
    out = tmp_path / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "tests.train.sharded_step_worker",
        "--out",
        str(out),
        "--mesh",
        mesh,
        "--kinds",
        kinds,
        "--rows",
        str(rows),
        "--seq",
        str(seq),
        "--attn",
        attn,
    ]
    if packed:
        cmd += ["--packed"]
    if sgd:
        cmd += ["--sgd"]
    if num_processes > 1:
        cmd += ["--process_id", str(process_id), "--num_processes", str(num_processes), "--port", str(port)]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out


def finish(proc_out):
    proc, out = proc_out
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.read_text())


def assert_same(a, b, atol=1e-5):
    np.testing.assert_allclose(a["losses"], b["losses"], atol=atol, rtol=0)
    np.testing.assert_allclose(a["accuracies"], b["accuracies"], atol=atol, rtol=0)
    for x, y in zip(a["params"], b["params"], strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return finish(run_worker(tmp_path_factory.mktemp("single"), "single", "1,1,1,1", 1))


@pytest.fixture(scope="module")
def single_long(tmp_path_factory):
    """One 512-token row, and three rows (for the padded batch), on one device."""
    path = tmp_path_factory.mktemp("single_long")
    one = run_worker(path, "one", "1,1,1,1", 1, rows=1, seq=512)
    three = run_worker(path, "three", "1,1,1,1", 1, rows=3, seq=512)
    return {1: finish(one), 3: finish(three)}


def test_2x2x2_mesh_equals_single_device(single, tmp_path):
    sharded = finish(run_worker(tmp_path, "sharded", "2,2,1,2", 8))
    for kind in KINDS.split(","):
        assert sharded[kind]["sharded_leaves"] > 0 and single[kind]["sharded_leaves"] == 0
        assert_same(sharded[kind], single[kind])


@pytest.mark.parametrize("attn", ["xla", "pallas"])
def test_one_row_split_over_8_devices_equals_single_device(single_long, tmp_path, attn):
    """Batch 1 x 512 tokens on a sequence=8 mesh: each device holds 64 tokens and a 1/8 of every parameter."""
    sharded = finish(run_worker(tmp_path, "seq8", "1,1,8,1", 8, rows=1, seq=512, attn=attn))
    for kind in KINDS.split(","):
        assert sharded[kind]["sharded_leaves"] > 0
        assert_same(sharded[kind], single_long[1][kind])


def test_padded_rows_with_sequence_and_tensor_axes(single_long, tmp_path):
    """3 rows on data=2 (padded to 4 with target-free rows) x sequence=2 x tensor=2, blockwise attention."""
    sharded = finish(run_worker(tmp_path, "pad", "2,1,2,2", 8, rows=3, seq=512, attn="blockwise"))
    for kind in KINDS.split(","):
        assert_same(sharded[kind], single_long[3][kind])


@pytest.fixture(scope="module")
def single_long_sgd(tmp_path_factory):
    """Three rows of up to 512 tokens on one device, trained with SGD."""
    return finish(run_worker(tmp_path_factory.mktemp("sgd"), "sgd", "1,1,1,1", 1, rows=3, seq=512, sgd=True))


@pytest.mark.parametrize("attn", ["xla", "blockwise"])
def test_packed_rows_on_8_devices_with_sequence_parallelism_equal_unpacked_single_device(
    single_long_sgd, tmp_path, attn
):
    """The same 3 examples packed into rows of 512 (`data.packing`) on data=2 x sequence=2 x tensor=2. With SGD:
    Adam's first updates are about lr whatever the gradient's size, so one near-zero gradient (a Bitune mixing
    weight's, here) turns float32 rounding of a sharded reduction into a 5e-3 parameter difference; the gradients
    themselves agree to 1e-7."""
    sharded = finish(run_worker(tmp_path, "packed", "2,1,2,2", 8, rows=3, seq=512, attn=attn, packed=True, sgd=True))
    for kind in KINDS.split(","):
        assert_same(sharded[kind], single_long_sgd[kind])


@pytest.mark.parametrize("layout", ["2x2x2", "sequence"])
def test_two_processes_over_gloo_equal_single_process(single, single_long, tmp_path, layout):
    port = free_port()
    if layout == "2x2x2":
        mesh, kwargs, reference = "2,2,1,2", {"kinds": "full,peft"}, single
    else:
        mesh, kwargs, reference = "1,1,8,1", {"rows": 1, "seq": 512}, single_long[1]
    procs = [
        run_worker(tmp_path, f"p{i}", mesh, 4, process_id=i, num_processes=2, port=port, **kwargs) for i in range(2)
    ]
    results = [finish(p) for p in procs]
    for r in results:
        for kind in r:
            assert r[kind]["processes"] == 2 and r[kind]["devices"] == 8
            assert_same(r[kind], reference[kind])
