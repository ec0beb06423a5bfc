"""Parameter paths as '/'-joined dict keys ("layers/attn/q"): the one spelling that sharding rules, loaders and
shape checks match against. Keys that are not dict keys (a NamedTuple field, a tuple index: the optimizer state's
wrappers around a parameter tree) are left out, so a moment of `layers/attn/q` is named `layers/attn/q` too.
Checkpoint fingerprints keep `jax.tree_util.keystr`, the spelling saved in existing checkpoints."""

from __future__ import annotations

from typing import Any

import jax


def path_name(key_path) -> str:
    return "/".join(str(k.key) for k in key_path if isinstance(k, jax.tree_util.DictKey))


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """`(path_name, leaf)` for every leaf, in `jax.tree.leaves` order."""
    return [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
