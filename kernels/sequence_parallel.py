"""Attention over a sequence split across devices (sequence / context parallelism).

A batch of one 32k-token sequence has a single row for eight devices to share; splitting its rows cannot use them,
splitting its tokens can. Every op of a decoder layer except attention is per token, so with activations sharded
`[batch over data x fsdp, seq over "sequence", ...]` the projections and MLP run on each device's slice with no
communication beyond the FSDP weight gathers. Attention needs every key: inside `jax.shard_map` each device keeps
its own queries and all-gathers the keys, values and key-side mask fields of the layer (K/V of one layer are small
next to the activations: `seq x kv_heads x head_dim`), then runs any local implementation (dense XLA, blockwise XLA,
Pallas) on `[local queries x all keys]`. The all-gather's transpose is a reduce-scatter, so the backward sums each
device's dK/dV contributions into the owner's slice. Activation memory stays O(seq / devices); the gathered K/V
(and, with the dense path, the `[local q, seq]` scores) are per layer and recomputed under remat.

Masks are position-based (`MaskSpec`), so a shard needs nothing but its own query positions and the gathered key
positions: causal, bidirectional-prefix, window, segments and padding all follow unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .mask import MaskSpec, pad_spec
from .padding import pad_tokens


@dataclasses.dataclass(frozen=True)
class SequenceParallel:
    """How activations are laid out on `mesh`: rows over `batch_axes`, tokens over `axis`, heads over `head_axis`."""

    mesh: Mesh
    axis: str = "sequence"
    batch_axes: tuple[str, ...] = ("data", "fsdp")
    head_axis: str | None = "tensor"

    @property
    def size(self) -> int:
        return self.mesh.shape[self.axis]

    def batch_spec(self, batch: int):
        """The batch axes if they divide `batch` (the loop pads rows so they do), else replicated rows."""
        size = math.prod(self.mesh.shape[a] for a in self.batch_axes)
        return self.batch_axes if batch % size == 0 else None

    def constrain(self, x: jax.Array) -> jax.Array:
        """Pin `[batch, seq, ...]` activations to rows over the batch axes and tokens over `axis` (when they divide),
        so the partitioner all-gathers weights (FSDP) rather than activations."""
        seq = self.axis if x.shape[1] % self.size == 0 else None
        spec = P(self.batch_spec(x.shape[0]), seq, *(None,) * (x.ndim - 2))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))


def sequence_parallel_attention(
    attend: Callable,  # (q, k, v, spec) -> out: the local implementation
    q: jax.Array,  # [batch, q_len, heads, head_dim]
    k: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    v: jax.Array,  # [batch, kv_len, kv_heads, head_dim]
    spec: MaskSpec,
    sp: SequenceParallel,
) -> jax.Array:  # [batch, q_len, heads, head_dim]
    """`attend` with queries split over `sp.axis` and keys/values gathered from every shard.

    Lengths that do not divide the axis are padded with invisible tokens (position -1) and cut back after.
    """
    n = sp.size
    q_len, kv_len = q.shape[1], k.shape[1]
    q_pad, kv_pad = -(-q_len // n) * n, -(-kv_len // n) * n
    spec = pad_spec(spec, q_pad, kv_pad)
    q, k, v = pad_tokens(q, q_pad, 0), pad_tokens(k, kv_pad, 0), pad_tokens(v, kv_pad, 0)

    rows = sp.batch_spec(q.shape[0])
    heads = None
    if sp.head_axis is not None and sp.mesh.shape[sp.head_axis] > 1:
        t = sp.mesh.shape[sp.head_axis]
        heads = sp.head_axis if q.shape[2] % t == 0 and k.shape[2] % t == 0 else None
    x_spec = P(rows, sp.axis, heads, None)
    tok = P(rows, sp.axis)

    def maybe(field, s):
        return None if field is None else s

    spec_specs = dataclasses.replace(
        spec,
        q_positions=tok,
        kv_positions=tok,
        window=maybe(spec.window, P()),
        prefix_len=maybe(spec.prefix_len, P(rows)),
        q_segment_ids=maybe(spec.q_segment_ids, tok),
        kv_segment_ids=maybe(spec.kv_segment_ids, tok),
    )

    def local(q, k, v, spec):
        gather = lambda x: None if x is None else jax.lax.all_gather(x, sp.axis, axis=1, tiled=True)
        spec = dataclasses.replace(
            spec, kv_positions=gather(spec.kv_positions), kv_segment_ids=gather(spec.kv_segment_ids)
        )
        return attend(q, gather(k), gather(v), spec)

    # check_vma=False: the Pallas calls and the blockwise scan carry no varying-axes types. The one collective
    # is the explicit all-gather, whose transpose (a reduce-scatter) is right either way.
    out = jax.shard_map(
        local, mesh=sp.mesh, in_specs=(x_spec, x_spec, x_spec, spec_specs), out_specs=x_spec, check_vma=False
    )(q, k, v, spec)
    return out[:, :q_len]
