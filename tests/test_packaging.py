"""Packaging: setup.cfg lists every package folder, and the kernels install under bitune_jax's own name beside
Hugging Face's top-level `kernels` distribution (both import, each its own)."""

import configparser
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package_folder_and_maps_the_kernels():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    assert cfg["options"]["package_dir"].split() == ["bitune_jax.kernels", "=", "kernels"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bitune_jax").rglob("__init__.py")}
    found |= {
        ".".join(("bitune_jax", *p.parent.relative_to(ROOT).parts)) for p in (ROOT / "kernels").rglob("__init__.py")
    }
    assert listed == found


@pytest.mark.parametrize("where", ["elsewhere", "repository_root"])
def test_bitune_jax_kernels_and_hugging_faces_kernels_both_import_each_its_own(tmp_path, where):
    """From the root, where the bare name `kernels` first finds this repository's folder, it hands the name over to
    Hugging Face's distribution (transformers >= 5.25 imports it when it loads)."""
    code = (
        "import json, importlib.metadata, kernels, bitune_jax.kernels as ours; "
        "print(json.dumps([kernels.__file__, ours.__file__, importlib.metadata.version('kernels'), "
        "hasattr(kernels, 'get_kernel'), hasattr(ours, 'attention')]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT if where == "repository_root" else tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    theirs, ours, version, hub_api, our_api = json.loads(out.stdout.strip().splitlines()[-1])
    assert "site-packages" in theirs and hub_api and version  # Hugging Face's, with its hub API
    assert pathlib.Path(ours).resolve() == ROOT / "kernels" / "__init__.py" and our_api


def test_every_attention_impl_runs_from_outside_the_repository(tmp_path):
    """The kernels import each other by relative name: outside the repository root a bare `kernels` is Hugging Face's
    (or nothing), so `from kernels.x import` there would fail on the first blockwise, Pallas or sequence-parallel
    call, not at import."""
    code = """
import json, jax, numpy as np
from jax.sharding import Mesh
from bitune_jax import kernels
q, k, v = (jax.random.normal(key, (1, 256, 2, 16)) for key in jax.random.split(jax.random.key(0), 3))
pos = np.broadcast_to(np.arange(256), (1, 256))
spec = kernels.MaskSpec(pos, pos)
mesh = Mesh(np.array(jax.devices()).reshape(1, 1, 2, 1), ("data", "fsdp", "sequence", "tensor"))
ref = kernels.attention(q, k, v, mask_spec=spec, scale=0.25, impl="xla")
runs = {impl: kernels.attention(q, k, v, mask_spec=spec, scale=0.25, impl=impl) for impl in ("blockwise", "pallas")}
runs["sequence_parallel"] = jax.jit(
    lambda q, k, v: kernels.attention(
        q, k, v, mask_spec=spec, scale=0.25, impl="blockwise", sequence_parallel=kernels.SequenceParallel(mesh)
    )
)(q, k, v)
print(json.dumps({name: float(np.abs(out - ref).max()) for name, out in runs.items()}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    flags = os.environ.get("XLA_FLAGS", "")  # the unit tier's fast-compile flags (tests/conftest.py)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2".strip())
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(errors) == {"blockwise", "pallas", "sequence_parallel"}
    assert max(errors.values()) < 1e-5, errors  # f32, against the dense reference
