"""Typed PRNG keys in checkpointed trees: orbax cannot serialize `jax.random.key` arrays, so a save stores their
`jax.random.key_data` and records each key's implementation by tree path; a restore wraps the data back. Raw uint32
key data round-trips as it is. (The loop's own state holds no keys; states of other Flax projects, e.g. an
`nnx.Rngs`, do.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

PyTree = Any


def is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def keys_to_data(state: PyTree) -> tuple[PyTree, dict[str, str]]:
    """Typed keys -> uint32 key data, plus {tree path: key implementation name} to undo it."""
    impls: dict[str, str] = {}

    def convert(path, leaf):
        if is_key(leaf):
            impls[jax.tree_util.keystr(path)] = str(jax.random.key_impl(leaf))
            return jax.random.key_data(leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(convert, state), impls


def abstract_for_restore(
    abstract: PyTree, key_impls: Mapping[str, str], where: str, mismatch: type[Exception] = ValueError
) -> PyTree:
    """Concrete arrays -> ShapeDtypeStructs; typed-key leaves -> the ShapeDtypeStruct of their key data."""

    def convert(path, leaf):
        name = jax.tree_util.keystr(path)
        if is_key(leaf) != (name in key_impls):
            saved = "a typed PRNG key" if name in key_impls else "not a typed key"
            raise mismatch(
                f"checkpoint at {where}: state leaf {name} was saved as {saved}, "
                f"but the requested tree has dtype {leaf.dtype}"
            )
        sharding = getattr(leaf, "sharding", None)
        if is_key(leaf):
            data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)  # spec covers leading dims only
        if isinstance(leaf, jax.Array | np.ndarray):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        return leaf

    return jax.tree_util.tree_map_with_path(convert, abstract)


def data_to_keys(state: PyTree, key_impls: Mapping[str, str]) -> PyTree:
    if not key_impls:
        return state

    def convert(path, leaf):
        impl = key_impls.get(jax.tree_util.keystr(path))
        return leaf if impl is None else jax.random.wrap_key_data(leaf, impl=impl)

    return jax.tree_util.tree_map_with_path(convert, state)
