"""The decoder: pure functions over a parameter pytree, layers stacked on axis 0 and scanned.

Parameter tree (`L` layers, kernels stored `[in, out]`):
    embed [vocab, dim]; final_norm [dim]; lm_head [dim, vocab] (untied only)
    layers/{q,k,v}_proj [L, dim, heads*head_dim]; layers/o_proj [L, heads*head_dim, dim]
    layers/{gate,up}_proj [L, dim, mlp]; layers/down_proj [L, mlp, dim]
    layers/{attn_in,attn_out,mlp_in,mlp_out}_norm [L, dim] as the norm layout needs them
    layers/{q,k}_norm [L, head_dim] (per-head) or [L, heads*head_dim] (full width)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax import kernels
from bitune_jax.models import rope as rope_lib
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.peft import PeftConfig, dense
from bitune_jax.tree_paths import named_leaves

Params = dict[str, Any]
NO_WINDOW = np.iinfo(np.int32).max

NORMS_BY_LAYOUT = {
    "pre": ("attn_in_norm", "mlp_in_norm"),
    "post": ("attn_out_norm", "mlp_out_norm"),
    "sandwich": ("attn_in_norm", "attn_out_norm", "mlp_in_norm", "mlp_out_norm"),
}


class KVCache(NamedTuple):
    """Per-layer keys/values for decoding. Slots are filled left to right: for the whole batch at once (a scalar
    `length`), or each row at its own offset (a `[batch]` length: the rows of a continuous-batching engine).

    Stacked (one array over the layers, as a scanned forward writes it) or layered (a tuple of one buffer a layer,
    read by `forward` with per-layer weights, its layers unrolled): a scanned decode step copies each layer's slice
    out of the stacked cache before attending over it, 0.5 GB a step for SmolLM2 at 16 rows x 704 slots."""

    # Head-major, so that a decode step's attention reads each head's keys as one run, in place (a [.., max_len,
    # kv_heads, ..] cache made XLA:CPU copy every layer's keys and values into that order, every step).
    k: jax.Array | tuple[jax.Array, ...]  # [layers, batch, kv_heads, max_len, head_dim], or layers x [batch, ...]
    v: jax.Array | tuple[jax.Array, ...]  # as k
    positions: jax.Array  # [batch, max_len] int32, -1 for empty or padding slots
    length: jax.Array  # [] or [batch] int32, slots written so far

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32, layered: bool = False) -> KVCache:
        shape = (cfg.num_kv_heads, max_len, cfg.head_dim)
        if layered:  # one buffer each (not views of one array: each is donated and written in place)
            k = tuple(jnp.zeros((batch, *shape), dtype) for _ in range(cfg.num_layers))
            v = tuple(jnp.zeros((batch, *shape), dtype) for _ in range(cfg.num_layers))
        else:
            k = v = jnp.zeros((cfg.num_layers, batch, *shape), dtype)
        return cls(k=k, v=v, positions=jnp.full((batch, max_len), -1, jnp.int32), length=jnp.zeros((), jnp.int32))

    @property
    def layered(self) -> bool:
        return isinstance(self.k, tuple)


def unstack_layers(tree: Params | None) -> Params | None:
    """Parameters or adapters with `layers` as a tuple of per-layer dicts instead of arrays stacked on axis 0: what
    `forward` runs unrolled, each layer reading its own weights in place (a static slice of the stacked weights is
    a copy on XLA:CPU, every step). A copy of the layer weights; None and per-layer trees are returned as they are."""
    if not tree or "layers" not in tree or isinstance(tree["layers"], tuple) or not tree["layers"]:
        return tree
    num_layers = jax.tree.leaves(tree["layers"])[0].shape[0]
    return {**tree, "layers": tuple(jax.tree.map(lambda a, i=i: a[i], tree["layers"]) for i in range(num_layers))}


def rms_norm(x: jax.Array, w: jax.Array, eps: float, plus_one: bool) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    scale = w.astype(jnp.float32) + 1.0 if plus_one else w.astype(jnp.float32)
    return (y * scale).astype(x.dtype)


def _activation(cfg: ModelConfig, x: jax.Array) -> jax.Array:
    if cfg.mlp_activation == "silu":
        return jax.nn.silu(x)
    return jax.nn.gelu(x, approximate=True)


class LayerKind(NamedTuple):
    """What a scanned layer body needs to know about its layer besides its weights (traced per layer)."""

    sliding: jax.Array  # [] bool: a sliding-window layer (its own RoPE base when the family has one)
    window: jax.Array  # [] int32 left window; NO_WINDOW for global layers


def layer_kinds(cfg: ModelConfig) -> LayerKind:
    """`[layers]` stacked `LayerKind`s, to scan over beside the stacked weights."""
    return LayerKind(
        sliding=jnp.asarray([k == "sliding" for k in cfg.kinds]),
        window=jnp.asarray([cfg.sliding_window if k == "sliding" else NO_WINDOW for k in cfg.kinds], jnp.int32),
    )


class RopeTables(NamedTuple):
    """RoPE `(cos, sin)` of one stream's positions for global and for sliding layers, each `[batch, seq, head_dim]`."""

    global_: tuple[jax.Array, jax.Array]
    local: tuple[jax.Array, jax.Array]

    @classmethod
    def of(cls, cfg: ModelConfig, positions: jax.Array) -> RopeTables:
        """Tables for `positions` (`[batch, seq]`, -1 padding is rotated as position 0: it is masked anyway)."""
        positions = jnp.maximum(positions, 0)
        global_ = rope_lib.rope_angles(positions, *rope_lib.inverse_frequencies(cfg.rope, cfg.head_dim))
        local = global_
        if cfg.rope_local is not None:
            local = rope_lib.rope_angles(positions, *rope_lib.inverse_frequencies(cfg.rope_local, cfg.head_dim))
        return cls(global_, local)

    def at(self, kind: LayerKind) -> dict[str, jax.Array]:
        """`{"cos", "sin"}` for one layer (the keyword arguments `decoder_layer` takes)."""
        (cos_g, sin_g), (cos_l, sin_l) = self.global_, self.local
        return {"cos": jnp.where(kind.sliding, cos_l, cos_g), "sin": jnp.where(kind.sliding, sin_l, sin_g)}


def scan_layers(body, carry, xs, cfg: ModelConfig, compute: Compute):
    """`jax.lax.scan` of `body(carry, xs_l, kind) -> (carry, y_l)` over the layers, under the remat policy.

    `xs` are stacked on axis 0 (weights, adapters, dropout keys, layer indices); `kind` is the layer's
    `LayerKind`. The one scan that the decoder and both Bitune streams run.
    """
    return jax.lax.scan(compute.checkpointed(lambda c, x: body(c, *x)), carry, (xs, layer_kinds(cfg)))


def embed(params: Params, tokens: jax.Array, cfg: ModelConfig, dtype) -> jax.Array:
    x = jnp.take(params["embed"], tokens, axis=0).astype(dtype)
    if cfg.embed_scale:
        x = x * jnp.asarray(math.sqrt(cfg.dim), dtype)
    return x


def unembed(params: Params, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Final norm and output projection; logits in float32 `[batch, seq, vocab]`."""
    x = rms_norm(x, params["final_norm"], cfg.norm_eps, cfg.norm_plus_one)
    w = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
    logits = jnp.einsum("btd,dv->btv", x, w.astype(x.dtype), preferred_element_type=jnp.float32)
    if cfg.final_logit_softcap is not None:
        logits = jnp.tanh(logits / cfg.final_logit_softcap) * cfg.final_logit_softcap
    return logits


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Layer(NamedTuple):
    """One layer's weights and (optionally) its adapters; `proj` applies a named projection."""

    params: Params
    adapters: Params
    peft: PeftConfig | None
    dropout_key: jax.Array | None = None  # this layer's adapter-dropout key (training only)

    def proj(self, name: str, x: jax.Array) -> jax.Array:
        key = None if self.dropout_key is None else jax.random.fold_in(self.dropout_key, PROJECTIONS.index(name))
        return dense(x, self.params[name], self.adapters.get(name), self.peft, key)


def layer_keys(key: jax.Array | None, num_layers: int) -> jax.Array | None:
    """One adapter-dropout key per layer, to scan over (None stays None: no dropout)."""
    return None if key is None else jax.random.split(key, num_layers)


def qkv(layer: Layer, x: jax.Array, cfg: ModelConfig, cos, sin):
    """Project to rotated queries, keys and values `[batch, seq, heads, head_dim]`."""
    batch, seq, _ = x.shape
    eps, p1 = cfg.norm_eps, cfg.norm_plus_one
    lp = layer.params
    q, k, v = layer.proj("q_proj", x), layer.proj("k_proj", x), layer.proj("v_proj", x)
    if cfg.qk_norm == "full":
        q, k = rms_norm(q, lp["q_norm"], eps, p1), rms_norm(k, lp["k_norm"], eps, p1)
    q = q.reshape(batch, seq, cfg.num_heads, cfg.head_dim)
    k = k.reshape(batch, seq, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(batch, seq, cfg.num_kv_heads, cfg.head_dim)
    if cfg.qk_norm == "per_head":
        q, k = rms_norm(q, lp["q_norm"], eps, p1), rms_norm(k, lp["k_norm"], eps, p1)
    return rope_lib.apply_rope(q, cos, sin), rope_lib.apply_rope(k, cos, sin), v


def mlp(layer: Layer, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    h = _activation(cfg, layer.proj("gate_proj", x)) * layer.proj("up_proj", x)
    return layer.proj("down_proj", h)


def _norm(lp: Params, name: str, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    if name not in lp:
        return x
    return rms_norm(x, lp[name], cfg.norm_eps, cfg.norm_plus_one)


def decoder_layer(
    layer: Layer,
    x: jax.Array,  # [batch, seq, dim]
    cfg: ModelConfig,
    *,
    cos: jax.Array,
    sin: jax.Array,
    attend,  # (q, k, v) -> attention output [batch, seq, heads, head_dim], and the k, v it kept
):
    """One block for every norm layout. `attend` decides which keys/values the queries see."""
    lp = layer.params
    h = _norm(lp, "attn_in_norm", x, cfg)
    q, k, v = qkv(layer, h, cfg, cos, sin)
    o, kept = attend(q, k, v)
    o = layer.proj("o_proj", o.reshape(*o.shape[:2], -1))
    x = x + _norm(lp, "attn_out_norm", o, cfg)
    h = mlp(layer, _norm(lp, "mlp_in_norm", x, cfg), cfg)
    return x + _norm(lp, "mlp_out_norm", h, cfg), kept


def forward(
    params: Params,
    tokens: jax.Array,  # [batch, seq] int32
    cfg: ModelConfig,
    *,
    positions: jax.Array | None = None,  # [batch, seq] int32, -1 for padding
    prefix_len: jax.Array | None = None,  # [batch] int32: bidirectional attention among positions < prefix_len
    segment_ids: jax.Array | None = None,  # [batch, seq] int32 (packed rows): attention only within a segment
    cache: KVCache | None = None,
    adapters: Params | None = None,
    peft: PeftConfig | None = None,
    compute: Compute = Compute(),
    logit_rows: jax.Array | None = None,  # [batch, rows] int32: unembed only these rows (a loss needs no more)
    return_hidden: bool = False,  # final hidden states (before the final norm) instead of logits
    dropout_key: jax.Array | None = None,  # training: LoRA dropout (`peft.dropout`) drawn from this key
    kv_window: int | None = None,  # with a cache: attend over its first kv_window slots only (all that is written)
) -> tuple[jax.Array, KVCache | None]:
    """Logits `[batch, seq or rows, vocab]` (float32) and the updated cache.

    Without a cache the tokens attend to each other; with one they are written at slots
    `cache.length ...` and attend to everything the cache holds. Stacked weights run the layers as one scan;
    per-layer weights (`unstack_layers`, with a layered cache) run them unrolled, as an engine's decode step does.
    """
    if cache is not None and compute.sequence_parallel is not None:
        raise ValueError("sequence_parallel splits a whole sequence over devices; decoding with a cache does not")
    if cache is not None and segment_ids is not None:
        raise ValueError("segment_ids are for packed rows of whole examples; a cache holds one sequence a row")
    batch, seq = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))
    rope = RopeTables.of(cfg, positions)
    x = embed(params, tokens, cfg, compute.dtype)

    per_row = cache is not None and cache.length.ndim == 1
    if per_row:  # row i writes at slots length[i] ...; past the end (a finished engine row) writes are dropped
        rows, cols = jnp.arange(batch)[:, None], cache.length[:, None] + jnp.arange(seq)  # [batch, seq]
        kv_positions = cache.positions.at[rows, cols].set(positions, mode="drop")
    elif cache is not None:
        kv_positions = jax.lax.dynamic_update_slice(cache.positions, positions, (0, cache.length))
    else:
        kv_positions = positions

    def body(carry, xs, kind: LayerKind):
        # The cache rides in the carry, whole: each layer writes its new keys/values in place and attends over its
        # own slice. (Scanned as xs/ys, every decode step would copy the whole cache in and out.) Unrolled over a
        # layered cache, the carry holds this layer's buffers only (`layer` None), read in place.
        x, cache_kv = carry  # cache_kv: (k, v) stacked over layers, or this layer's, or None without a cache
        lp, la, key, layer = xs
        spec = kernels.MaskSpec(
            q_positions=positions,
            kv_positions=kv_positions[:, :kv_window],
            window=kind.window,
            prefix_len=prefix_len,
            q_segment_ids=segment_ids,
            kv_segment_ids=segment_ids,
        )

        def attend(q, k, v):
            kept = None
            if cache_kv is not None:
                at = () if layer is None else (layer,)

                def write(c, n):  # the new keys or values `[batch, seq, kv_heads, head_dim]` into this layer's slots
                    if per_row:  # (indices split by a slice: their [batch, seq] dims come first, as in n)
                        return c.at[(*at, rows, slice(None), cols)].set(n.astype(c.dtype), mode="drop")
                    n = jnp.swapaxes(n, 1, 2).astype(c.dtype)  # [batch, kv_heads, seq, head_dim]
                    return jax.lax.dynamic_update_slice(c, n[(None,) * len(at)], (*at, 0, 0, cache.length, 0))

                kept = (write(cache_kv[0], k), write(cache_kv[1], v))
                own = kept if layer is None else (jax.lax.dynamic_index_in_dim(c, layer, keepdims=False) for c in kept)
                k, v = (c[:, :, :kv_window] for c in own)
            o = compute.attention(
                q,
                k.astype(q.dtype),
                v.astype(q.dtype),
                mask_spec=spec,
                scale=cfg.scale,
                logit_softcap=cfg.attn_logit_softcap,
                **({"kv_layout": "bhsd"} if kept is not None else {}),
            )
            return o, kept

        x, kept = decoder_layer(Layer(lp, la, peft, key), compute.constrain(x), cfg, **rope.at(kind), attend=attend)
        return (x, kept), None

    layer_adapters = (adapters or {}).get("layers", {})
    if layer_adapters and peft is None:
        raise ValueError("adapters were given without the PeftConfig that made them")
    keys = layer_keys(dropout_key, cfg.num_layers)
    if isinstance(params["layers"], tuple):  # per-layer weights: the layers unrolled
        if cache is not None and not cache.layered:
            raise ValueError("per-layer weights (unstack_layers) decode from a layered cache (KVCache.init(layered=))")
        if layer_adapters and not isinstance(layer_adapters, tuple):
            raise ValueError("per-layer weights need per-layer adapters: unstack_layers(adapters)")
        kinds, kv, layer = layer_kinds(cfg), ([], []), compute.checkpointed(body)  # the scan's remat, per layer
        for i in range(cfg.num_layers):
            xs = (params["layers"][i], layer_adapters[i] if layer_adapters else {}, None if keys is None else keys[i])
            own = None if cache is None else (cache.k[i], cache.v[i])
            (x, own), _ = layer((x, own), (*xs, None), jax.tree.map(lambda a, i=i: a[i], kinds))
            if own is not None:
                kv[0].append(own[0])
                kv[1].append(own[1])
        new_kv = (tuple(kv[0]), tuple(kv[1]))
    else:
        if cache is not None and cache.layered:
            raise ValueError("a layered cache is read by per-layer weights: forward(unstack_layers(params), ...)")
        xs = (params["layers"], layer_adapters, keys, jnp.arange(cfg.num_layers))
        cache_kv = (cache.k, cache.v) if cache is not None else None
        (x, new_kv), _ = scan_layers(body, (x, cache_kv), xs, cfg, compute)
    if logit_rows is not None:
        x = jnp.take_along_axis(x, logit_rows[..., None], axis=1)
    logits = x if return_hidden else unembed(params, x, cfg)
    if cache is None:
        return logits, None
    new_cache = KVCache(k=new_kv[0], v=new_kv[1], positions=kv_positions, length=cache.length + seq)
    return logits, new_cache


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, scale: float = 0.02) -> Params:
    """Random parameters (for tests and from-scratch runs); norm weights start at their identity."""
    L, d, f = cfg.num_layers, cfg.dim, cfg.mlp_dim
    hq, hk = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    shapes = {
        "q_proj": (L, d, hq),
        "k_proj": (L, d, hk),
        "v_proj": (L, d, hk),
        "o_proj": (L, hq, d),
        "gate_proj": (L, d, f),
        "up_proj": (L, d, f),
        "down_proj": (L, f, d),
    }
    keys = iter(jax.random.split(key, len(shapes) + 2))
    layers = {n: scale * jax.random.normal(next(keys), s, dtype) for n, s in shapes.items()}
    norm_init = 0.0 if cfg.norm_plus_one else 1.0
    for n in NORMS_BY_LAYOUT[cfg.norm_layout]:
        layers[n] = jnp.full((L, d), norm_init, dtype)
    if cfg.qk_norm != "none":
        width_q = cfg.head_dim if cfg.qk_norm == "per_head" else hq
        width_k = cfg.head_dim if cfg.qk_norm == "per_head" else hk
        layers["q_norm"] = jnp.full((L, width_q), norm_init, dtype)
        layers["k_norm"] = jnp.full((L, width_k), norm_init, dtype)
    params = {
        "embed": scale * jax.random.normal(next(keys), (cfg.vocab_size, d), dtype),
        "layers": layers,
        "final_norm": jnp.full((d,), norm_init, dtype),
    }
    if not cfg.tie_embeddings:
        params["lm_head"] = scale * jax.random.normal(next(keys), (d, cfg.vocab_size), dtype)
    return params


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Expected shape of every parameter, keyed by '/'-joined path (for loaders' validation)."""
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    return {name: tuple(leaf.shape) for name, leaf in named_leaves(shapes)}
