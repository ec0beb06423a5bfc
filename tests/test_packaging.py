"""Packaging: setup.cfg lists every package folder, and the kernels install under bitune_jax's own name beside
Hugging Face's top-level `kernels` distribution (both import, each its own)."""

import configparser
import json
import os
import pathlib
import subprocess
import sys

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


def test_bitune_jax_kernels_and_hugging_faces_kernels_both_import_each_its_own(tmp_path):
    code = (
        "import json, importlib.metadata, kernels, bitune_jax.kernels as ours; "
        "print(json.dumps([kernels.__file__, ours.__file__, importlib.metadata.version('kernels'), "
        "hasattr(kernels, 'get_kernel'), hasattr(ours, 'attention')]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    theirs, ours, version, hub_api, our_api = json.loads(out.stdout.strip().splitlines()[-1])
    assert "site-packages" in theirs and hub_api and version  # Hugging Face's, with its hub API
    assert pathlib.Path(ours).resolve() == ROOT / "kernels" / "__init__.py" and our_api
