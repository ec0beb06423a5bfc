"""How batches split over the mesh; meshes and parameter sharding rules are `bitune_jax.models.sharding`.

Mesh axes are `data` (pure data parallelism), `fsdp` (data parallelism with parameters and optimizer state sharded
over it), `sequence` (sequence parallelism: the tokens of each row split over it, parameters sharded over it as over
`fsdp`) and `tensor` (Megatron-style model parallelism). Batches split their rows over `data` x `fsdp` and their
tokens over `sequence`; a batch with fewer rows than `data` x `fsdp` is padded with rows that carry no targets.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.sharding import AXES, DEFAULT_RULES, SHARDED, make_mesh, spec_for, tree_shardings

__all__ = [
    "AXES",
    "BATCH",
    "DEFAULT_RULES",
    "ROWS",
    "SHARDED",
    "TOKENS",
    "batch_shardings",
    "global_batch",
    "make_mesh",
    "row_multiple",
    "spec_for",
    "tree_shardings",
]

ROWS = ("data", "fsdp")
BATCH = P(ROWS)  # [batch] arrays
TOKENS = P(ROWS, "sequence")  # [batch, seq] arrays


def row_multiple(mesh: Mesh) -> int:
    """Rows of a global batch must be a multiple of this (`data` x `fsdp`)."""
    return math.prod(mesh.shape[a] for a in ROWS)


def batch_shardings(batch: SFTBatch, mesh: Mesh) -> SFTBatch:
    """Rows over `data` x `fsdp`; the token axis of 2-D arrays over `sequence`."""
    return jax.tree.map(lambda v: NamedSharding(mesh, TOKENS if np.ndim(v) == 2 else BATCH), batch)


def global_batch(full: SFTBatch, mesh: Mesh) -> SFTBatch:
    """Place the global batch (every process holds all of it; batches are small next to activations) on the mesh:
    each process copies only the slices its own devices hold."""
    return jax.tree.map(
        lambda v, sharding: jax.make_array_from_callback(np.shape(v), sharding, lambda idx: np.asarray(v)[idx]),
        full,
        batch_shardings(full, mesh),
    )
