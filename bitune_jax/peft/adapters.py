"""Adapters live in their own pytree beside the frozen base, keyed by the same paths as the weights they adapt.

For a stacked base kernel `layers/q_proj [L, in, out]` the adapter entry `layers/q_proj` holds
    LoRA  {"lora_a": [L, in, r], "lora_b": [L, r, out]}            y = x W + s (x A) B
    DoRA  {"lora_a", "lora_b", "dora_m": [L, out]}                  y = x (m * V / ||V||_col),  V = W + s A B
    IA3   {"ia3_out": [L, out]} (k, v) or {"ia3_in": [L, in]} (down) y = (x W) * l  or  (x * l) W
Every adapter starts as the identity (B = 0, m = ||W||_col, l = 1), so a fresh adapter leaves the model unchanged.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp

from bitune_jax.peft.config import PeftConfig

Adapters = dict[str, Any]


def _paths(tree, prefix=""):
    """`(path, leaf)` in the dicts' insertion order, not `tree_paths.named_leaves`' sorted order: the adapters'
    init keys are `fold_in(key, i)` over this order, so it fixes every seeded run's initial adapters."""
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _paths(v, path + "/")
        else:
            yield path, v


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def target_paths(params: dict, peft: PeftConfig) -> list[str]:
    paths = [p for p, w in _paths(params) if w.ndim == 3 and re.fullmatch(peft.targets, p)]
    if not paths:
        raise ValueError(f"PEFT targets {peft.targets!r} match no kernel; kernels are e.g. 'layers/q_proj'")
    return paths


def init_adapters(params: dict, peft: PeftConfig, key: jax.Array, dtype=jnp.float32) -> Adapters:
    """A fresh adapter set for every kernel matched by `peft.targets` (identity at initialization)."""
    adapters: Adapters = {}
    for i, path in enumerate(target_paths(params, peft)):
        w = _get(params, path)
        layers, d_in, d_out = w.shape
        if peft.method == "ia3":
            name, width = ("ia3_in", d_in) if path.endswith("down_proj") else ("ia3_out", d_out)
            _set(adapters, path, {name: jnp.ones((layers, width), dtype)})
            continue
        # peft's init: A ~ kaiming_uniform_(a=sqrt(5)) over fan_in = d_in, i.e. U(+-1/sqrt(d_in)); B = 0.
        bound = d_in**-0.5
        entry = {
            "lora_a": jax.random.uniform(jax.random.fold_in(key, i), (layers, d_in, peft.rank), dtype, -bound, bound),
            "lora_b": jnp.zeros((layers, peft.rank, d_out), dtype),
        }
        if peft.method == "dora":
            entry["dora_m"] = jnp.linalg.norm(w.astype(jnp.float32), axis=1).astype(dtype)
        _set(adapters, path, entry)
    return adapters


def _get(tree: dict, path: str):
    for p in path.split("/"):
        tree = tree[p]
    return tree


def dense(
    x: jax.Array, w: jax.Array, adapter: dict | None, peft: PeftConfig | None, dropout_key: jax.Array | None = None
) -> jax.Array:
    """`x [..., in] @ w [in, out]` through an optional adapter (per-layer slices: no leading L axis).

    With a `dropout_key` and `peft.dropout > 0` (training), LoRA sees inverted dropout of its input; without a key
    (evaluation, generation) it sees `x` unchanged.
    """
    w = w.astype(x.dtype)
    if adapter is None:
        return plain_dense(x, w)
    if "ia3_in" in adapter:
        return jnp.einsum("...i,io->...o", x * adapter["ia3_in"].astype(x.dtype), w)
    if "ia3_out" in adapter:
        return jnp.einsum("...i,io->...o", x, w) * adapter["ia3_out"].astype(x.dtype)
    a, b = adapter["lora_a"].astype(x.dtype), adapter["lora_b"].astype(x.dtype)
    if "dora_m" in adapter:
        return jnp.einsum("...i,io->...o", x, merge_kernel(w, adapter, peft))
    x_a = x
    if dropout_key is not None and peft.dropout > 0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - peft.dropout, x.shape)
        x_a = jnp.where(keep, x / (1.0 - peft.dropout), 0.0).astype(x.dtype)
    return lora_dense(x, x_a, w, a, b, peft.scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def lora_dense(x: jax.Array, x_a: jax.Array, w: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """`x W + scale (x_a A) B` for `x, x_a [..., in]` (`x_a`: the adapter's input, `x` or its dropout), with a
    backward pass laid out for the hardware.

    Autodiff would contract the token axis for `dB` as `g^T (x A)`, which makes XLA:CPU copy the whole output
    gradient `g [tokens, out]` into a transposed layout every layer; this backward contracts it as `(x A)^T g`, with
    the big operand in the layout it already has (`benchmarks/bitune_step.py` and `benchmarks/train_step.py` time
    the difference). Token-axis contractions accumulate in float32.
    """
    return jnp.einsum("...i,io->...o", x, w) + scale * jnp.einsum("...r,ro->...o", x_a @ a, b)


@jax.custom_vjp
def plain_dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """`x [..., in] @ w [in, out]` with `lora_dense`'s backward layout: `dw` contracts the tokens as `x^T g` with
    both operands in the layout they have. Autodiff's `einsum` transpose instead makes XLA:CPU copy the output
    gradient into a transposed layout, fused into whatever produced it (the MLP's activation backward): 1.4 of 17
    seconds of a SmolLM2 full fine-tuning step at 8 x 256 tokens (`benchmarks/step_profile.py`)."""
    return jnp.einsum("...i,io->...o", x, w)


def _plain_dense_fwd(x, w):
    return plain_dense(x, w), (x, w)


def _plain_dense_bwd(residuals, g):
    x, w = residuals
    return jnp.einsum("...o,io->...i", g, w), _contract_tokens(x, g).astype(w.dtype)


plain_dense.defvjp(_plain_dense_fwd, _plain_dense_bwd)


def _lora_dense_fwd(x, x_a, w, a, b, scale):
    h = x_a @ a  # [..., rank]
    return jnp.einsum("...i,io->...o", x, w) + scale * (h @ b), (x, x_a, w, a, b, h)


def _contract_tokens(u: jax.Array, v: jax.Array) -> jax.Array:
    """`u^T v` over all leading axes: `[tokens, m], [tokens, n] -> [m, n]` in float32."""
    u, v = u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])
    return jax.lax.dot_general(u, v, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _lora_dense_bwd(scale, residuals, g):
    x, x_a, w, a, b, h = residuals
    g_h = scale * (g @ b.T)  # [..., rank]
    dx = jnp.einsum("...o,io->...i", g, w)
    dx_a = g_h @ a.T
    dw = _contract_tokens(x, g).astype(w.dtype)  # dead code (and removed by XLA) unless the base is trained
    da = _contract_tokens(x_a, g_h).astype(a.dtype)
    db = (scale * _contract_tokens(h, g)).astype(b.dtype)
    return dx, dx_a, dw, da, db


lora_dense.defvjp(_lora_dense_fwd, _lora_dense_bwd)


def merge_kernel(w: jax.Array, adapter: dict, peft: PeftConfig) -> jax.Array:
    """The plain kernel equal to `w` under `adapter` (works with or without a leading layer axis)."""
    if "ia3_in" in adapter:
        return w * adapter["ia3_in"][..., :, None].astype(w.dtype)
    if "ia3_out" in adapter:
        return w * adapter["ia3_out"][..., None, :].astype(w.dtype)
    delta = peft.scale * (adapter["lora_a"].astype(jnp.float32) @ adapter["lora_b"].astype(jnp.float32))
    merged = w.astype(jnp.float32) + delta
    if "dora_m" in adapter:
        norm = jnp.linalg.norm(merged, axis=-2, keepdims=True)
        merged = adapter["dora_m"][..., None, :].astype(jnp.float32) * merged / norm
    return merged.astype(w.dtype)


def merge(params: dict, adapters: Adapters, peft: PeftConfig) -> dict:
    """Base params with the adapters folded in (for export); the adapted model's logits are unchanged."""
    merged = jax.tree.map(lambda x: x, params)
    for path, _ in _adapter_entries(adapters):
        _set(merged, path, merge_kernel(_get(params, path), _get(adapters, path), peft))
    return merged


def unmerge(merged: dict, adapters: Adapters, peft: PeftConfig) -> dict:
    """Recover the base params from merged ones (LoRA and IA3; DoRA's rescaling is not invertible)."""
    base = jax.tree.map(lambda x: x, merged)
    for path, adapter in _adapter_entries(adapters):
        w = _get(merged, path)
        if "dora_m" in adapter:
            raise ValueError(
                f"{path}: a merged DoRA kernel cannot be unmerged (the column norms of the base are "
                "lost); keep the base params"
            )
        if "ia3_in" in adapter:
            w = w / adapter["ia3_in"][..., :, None].astype(w.dtype)
        elif "ia3_out" in adapter:
            w = w / adapter["ia3_out"][..., None, :].astype(w.dtype)
        else:
            w = (w.astype(jnp.float32) - peft.scale * (adapter["lora_a"] @ adapter["lora_b"])).astype(w.dtype)
        _set(base, path, w)
    return base


def _adapter_entries(adapters: Adapters):
    """(path, adapter dict) for every adapted kernel."""

    def walk(tree, prefix):
        for k, v in tree.items():
            if any(n in v for n in ("lora_a", "ia3_in", "ia3_out")):
                yield f"{prefix}{k}", v
            else:
                yield from walk(v, f"{prefix}{k}/")

    return list(walk(adapters, ""))
