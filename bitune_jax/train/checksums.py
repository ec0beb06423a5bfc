"""Content checksums of a pytree of arrays, computed where the arrays live.

A checkpoint records one checksum per array when it is saved and compares them after a restore, so bytes that
changed on disk (a flipped bit, a zero-filled block, a file from another step) are caught even where the storage
format decodes them without complaint. The checksum is computed on the device by one jitted reduction, at memory
bandwidth and without a host copy; it depends only on each array's logical values, not on its sharding, so a
checkpoint restored onto another mesh still verifies.

Each array's raw bits are read as 32-bit words w_i and hashed as two sums mod 2^32: sum(fmix32(w_i + i * G)) and
sum(w_i * (2i + 1)), where fmix32 is MurmurHash3's bijective finalizer and G the golden-ratio constant. A change to
any one word changes both sums (fmix32 is a bijection; 2i + 1 is odd), and changes to several words go unseen with
a chance of about 2^-32 or less.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

_GOLDEN = 0x9E3779B9


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words, shaped like `x` (plus a trailing 2 for 8-byte dtypes)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size in (1, 2):
        return jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
    raise TypeError(f"no checksum for dtype {x.dtype}")


def _array_checksum(x: jax.Array) -> jax.Array:
    """[2] uint32 for one array; element indices come from iotas over its own shape, so no reshape moves data."""
    w = _words(x)
    index = jnp.zeros(w.shape, jnp.uint32)
    for axis, stride in enumerate(np.cumprod((w.shape + (1,))[:0:-1])[::-1].tolist() if w.ndim else []):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride % 2**32)
    mixed = jnp.sum(_fmix32(w + index * jnp.uint32(_GOLDEN)), dtype=jnp.uint32)
    weighted = jnp.sum(w * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
    return jnp.stack([mixed, weighted])


@jax.jit
def _tree_checksums(tree: PyTree) -> PyTree:
    return jax.tree.map(_array_checksum, tree)


def checksums(tree: PyTree) -> dict[str, str]:
    """`{path: 16 hex digits}` for every array leaf of `tree` (typed PRNG keys must be converted to data first).

    Paths are `keystr(simple=True, separator="/")`, so a tree restored as dicts and lists names its leaves as the
    NamedTuples it was saved from did."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = _tree_checksums([jnp.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf for _, leaf in flat])
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): "".join(
            f"{int(v):08x}" for v in np.asarray(s.addressable_data(0))
        )
        for (path, _), s in zip(flat, sums)
    }


def first_mismatch(saved: dict[str, str], current: dict[str, str]) -> str | None:
    """The first array path whose checksum differs or that one side lacks, else None."""
    for path in sorted(set(saved) | set(current)):
        if saved.get(path) != current.get(path):
            return path
    return None
