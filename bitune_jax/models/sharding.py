"""Meshes and parameter sharding by rules over parameter paths: what loading a model onto devices needs.

Mesh axes are `data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimizer state sharded
over it), `sequence` (sequence parallelism: the tokens of each row split over it, parameters sharded over it as over
`fsdp`) and `tensor` (Megatron-style model parallelism). How batches split over the mesh is the trainer's
(`bitune_jax.train.sharding`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bitune_jax.tree_paths import path_name

AXES = ("data", "fsdp", "sequence", "tensor")
SHARDED = ("fsdp", "sequence")  # the axes a parameter's "fsdp" dim is split over (ZeRO-3 over both)
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


def make_mesh(
    *, data: int = 1, fsdp: int = 1, sequence: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    need = data * fsdp * sequence * tensor
    if need != len(devices):
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} x sequence={sequence} x tensor={tensor} = {need} devices, "
            f"but {len(devices)} are available; set config.mesh so the product matches"
        )
    return jax.make_mesh((data, fsdp, sequence, tensor), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def _fit(axis, size: int, mesh: Mesh):
    """`axis` for a dim of `size`: "fsdp" means all of `SHARDED`; trailing axes are dropped until the dim divides."""
    if axis is None:
        return None
    axes = [a for a in (SHARDED if axis == "fsdp" else (axis,)) if mesh.shape.get(a, 1) > 1]
    while axes and size % math.prod(mesh.shape[a] for a in axes):
        axes.pop()
    return None if not axes else axes[0] if len(axes) == 1 else tuple(axes)


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules=DEFAULT_RULES) -> P:
    """The first matching rule's spec on the trailing dims; an axis that does not divide its dim is dropped."""
    for pattern, spec in rules:
        if re.search(pattern, path) and len(shape) >= len(spec):
            lead = (None,) * (len(shape) - len(spec))
            return P(*lead, *(_fit(axis, size, mesh) for size, axis in zip(shape[len(lead) :], spec)))
    return P()


def tree_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES):
    """A `NamedSharding` for every leaf of `tree` (arrays or `ShapeDtypeStruct`s)."""

    def one(key_path, leaf):
        return NamedSharding(mesh, spec_for(path_name(key_path), tuple(np.shape(leaf)), mesh, rules))

    return jax.tree_util.tree_map_with_path(one, tree)
