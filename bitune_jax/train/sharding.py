"""Meshes, parameter sharding by rules over parameter paths, and global batches from per-process data.

Mesh axes are `data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimizer state sharded
over it) and `tensor` (Megatron-style model parallelism). Batches split their rows over `data` x `fsdp`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH = P(("data", "fsdp"))

# (regex searched in the '/'-joined dict path, spec of the trailing dims). Kernels are [..., in, out]; a stacked
# layer axis in front stays unsharded. Optimizer moments have the same paths as the params they follow.
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    (r"(^|/)embed$", P("tensor", "fsdp")),
    (r"(^|/)lm_head$", P("fsdp", "tensor")),
    (r"(q|k|v|gate|up)_proj$", P("fsdp", "tensor")),
    (r"(o|down)_proj$", P("tensor", "fsdp")),
    (r"(q|k|v|gate|up)_proj/lora_a$", P("fsdp", None)),
    (r"(q|k|v|gate|up)_proj/lora_b$", P(None, "tensor")),
    (r"(o|down)_proj/lora_a$", P("tensor", None)),
    (r"(o|down)_proj/lora_b$", P(None, "fsdp")),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    need = data * fsdp * tensor
    if need != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} = {need} devices, but "
                         f"{len(devices)} are available; set config.mesh so the product matches")
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _path(key_path) -> str:
    return "/".join(str(k.key) for k in key_path if isinstance(k, jax.tree_util.DictKey))


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules=DEFAULT_RULES) -> P:
    """The first matching rule's spec on the trailing dims; an axis that does not divide its dim is dropped."""
    for pattern, spec in rules:
        if re.search(pattern, path) and len(shape) >= len(spec):
            lead = (None,) * (len(shape) - len(spec))
            dims = []
            for size, axis in zip(shape[len(lead):], spec):
                ok = axis is not None and size % mesh.shape[axis] == 0
                dims.append(axis if ok else None)
            return P(*lead, *dims)
    return P()


def tree_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES):
    """A `NamedSharding` for every leaf of `tree` (arrays or `ShapeDtypeStruct`s)."""
    def one(key_path, leaf):
        return NamedSharding(mesh, spec_for(_path(key_path), tuple(np.shape(leaf)), mesh, rules))
    return jax.tree_util.tree_map_with_path(one, tree)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's rows into global arrays split over `data` x `fsdp` (one process: just place it)."""
    sharding = NamedSharding(mesh, BATCH)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
