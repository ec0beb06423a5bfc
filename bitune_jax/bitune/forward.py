"""The fused, batched Bitune forward: both prompt streams in one pass over the layers.

Per layer, for a batch of `prompt + answer` rows with prompt lengths `P` (docs/method.md B, steps 1-4):
  * the bidirectional stream (adapter set `bidir`) runs over the first `P - 1` prompt tokens with full attention
    among them and yields `K_b, V_b`;
  * the causal stream (adapter set `causal`) runs over the whole row. Its first `P - 1` queries are the causal
    prompt pass (they see the plain causal keys `K_c`); every later query (the last prompt token and the answer)
    sees the mixed prompt cache `(1 - alpha) K_c + alpha K_b` for slots `< P - 1` and the causal keys from `P - 1`
    on. One attention call does both: keys are `[mixed prompt | causal row]`, and segment ids separate the
    prompt queries (segment 0) from the answer queries (segment 1).
Masks are built from positions, so rows of different prompt lengths share one batch and padding (position -1)
never reaches a real token.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bitune_jax import kernels
from bitune_jax.bitune.config import BituneConfig
from bitune_jax.bitune.mixing import alpha, init_mixing, mix
from bitune_jax.data.batch import PackedBatch, SFTBatch
from bitune_jax.losses import example_token_loss, hidden_token_loss
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import (
    Layer,
    LayerKind,
    Params,
    RopeTables,
    decoder_layer,
    embed,
    layer_keys,
    scan_layers,
    unembed,
)
from bitune_jax.peft import init_adapters


def init_trainable(base: Params, cfg: ModelConfig, bcfg: BituneConfig, key: jax.Array) -> Params:
    """`{"causal": adapters, "bidir": adapters, "mix": {"w_k", "w_v"}}`; sets are initialized independently."""
    keys = jax.random.split(key, 2)
    trainable = {name: init_adapters(base, bcfg.peft, k) for name, k in zip(bcfg.adapter_sets, keys)}
    if bcfg.learn_alpha:
        trainable["mix"] = init_mixing(cfg, bcfg)
    return trainable


def adapter_set(trainable: Params, name: str) -> Params:
    if name not in trainable:
        have = ", ".join(k for k in trainable if k != "mix")
        raise KeyError(f"adapter set {name!r} does not exist; this model has: {have}")
    return trainable[name]


def mixing_weights(trainable: Params, cfg: ModelConfig, bcfg: BituneConfig) -> dict[str, jax.Array]:
    return trainable["mix"] if bcfg.learn_alpha else init_mixing(cfg, bcfg)


def bitune_streams(
    base: Params,
    trainable: Params,
    tokens: jax.Array,  # [batch, seq]
    positions: jax.Array,  # [batch, seq] int32, -1 for padding
    mixed_len: jax.Array,  # [batch] or [batch, seq] int32: positions < mixed_len (= P - 1) are mixed
    cfg: ModelConfig,
    bcfg: BituneConfig,
    *,
    prompt_width: int | None = None,  # static bound on max(mixed_len); the bidirectional stream's width
    compute: Compute = Compute(),
    return_mixed_cache: bool = False,
    dropout_key: jax.Array | None = None,  # training: LoRA dropout, drawn independently for the two streams
    segment_ids: jax.Array | None = None,  # [batch, seq] int32 (packed rows): example k + 1, 0 for padding
    prompt_slots: jax.Array | None = None,  # [batch, width] int32 (packed rows): the mixed tokens' slots, then -1
    bidir_source: jax.Array | None = None,  # [bidir rows, bidir width] int32: flat causal index of each token, or -1
    bidir_index: jax.Array | None = None,  # [batch, width] int32: flat bidirectional-stream index of each mixed token
):
    """Final causal-stream hidden states `[batch, seq, dim]` (and per-layer mixed prompt K/V if asked).

    Packed rows (`segment_ids`, `prompt_slots`, `bidir_source`, `bidir_index`, a per-token `mixed_len`;
    `data.packing`) hold several examples: the bidirectional stream runs over rows of its own (`bidir_source`: every
    example's first `P - 1` tokens packed end to end, nothing else), each causal row's mixed block holds its own
    examples' mixed tokens (`prompt_slots`, fetched from the stream by `bidir_index`), and segment ids `2 s` (prompt
    queries and the causal prompt keys of example `s`) and `2 s + 1` (its answer queries, its mixed prompt and its
    answer keys) keep every example to itself."""
    attention = functools.partial(compute.attention, scale=cfg.scale, logit_softcap=cfg.attn_logit_softcap)
    batch, seq = tokens.shape
    causal_set = adapter_set(trainable, "causal")
    bidir_set = causal_set if bcfg.shared_adapters else adapter_set(trainable, "bidir")
    weights = mixing_weights(trainable, cfg, bcfg)

    pos_c = positions
    per_token = mixed_len if mixed_len.ndim == 2 else mixed_len[:, None]  # [batch, seq or 1]
    seg_q = (pos_c >= per_token).astype(jnp.int32)  # 0: causal prompt pass, 1: answer pass
    if prompt_slots is None:  # one example a row: its mixed tokens are the row's first slots
        width = prompt_width or seq
        head = positions[:, :width]
        pos_b = jnp.where((head >= 0) & (head < per_token[:, :width]), head, -1)  # prompt[:P-1], either padding side
        tokens_b, seg_b, pos_m, kv_seg_m = tokens[:, :width], None, pos_b, jnp.ones((batch, width), jnp.int32)

        def prompt_part(k):  # [batch, seq, ...] -> the causal stream's values of the mixed tokens
            return k[:, :width]

        def stream_part(k_b):  # the bidirectional stream's values of the same tokens, in the same slots
            return k_b

        prefix = mixed_len if bcfg.bidirectional else None
    else:

        def flat(a):  # [rows, width, ...] -> [rows * width, ...]
            return a.reshape(-1, *a.shape[2:])

        source, at = jnp.maximum(bidir_source, 0), jnp.maximum(bidir_index, 0)
        pos_b = jnp.where(bidir_source >= 0, flat(positions)[source], -1)
        seg_b = jnp.where(bidir_source >= 0, flat(segment_ids)[source], 0)
        tokens_b = flat(tokens)[source]
        slot, rows = jnp.maximum(prompt_slots, 0), jnp.arange(batch)[:, None]
        pos_m = jnp.where(prompt_slots >= 0, positions[rows, slot], -1)
        kv_seg_m = 2 * jnp.where(prompt_slots >= 0, segment_ids[rows, slot], 0) + 1
        seg_q = 2 * segment_ids + seg_q

        def prompt_part(k):
            return k[rows, slot]

        def stream_part(k_b):
            return flat(k_b)[at]

        # every mixed position lies below `seq`: the whole segment is one bidirectional prefix
        prefix = jnp.full((pos_b.shape[0],), seq, jnp.int32) if bcfg.bidirectional else None
    kv_pos = jnp.concatenate([pos_m, pos_c], axis=1)
    kv_seg = jnp.concatenate([kv_seg_m, seg_q], axis=1)
    rope_c, rope_b = RopeTables.of(cfg, pos_c), RopeTables.of(cfg, pos_b)
    x_c, x_b = embed(base, tokens, cfg, compute.dtype), embed(base, tokens_b, cfg, compute.dtype)

    def body(carry, xs, kind: LayerKind):
        x_c, x_b = carry
        lp, la_c, la_b, w_k, w_v, key_c, key_b = xs
        spec_b = kernels.MaskSpec(
            q_positions=pos_b,
            kv_positions=pos_b,
            window=kind.window,
            prefix_len=prefix,
            q_segment_ids=seg_b,
            kv_segment_ids=seg_b,
        )
        spec_c = kernels.MaskSpec(
            q_positions=pos_c, kv_positions=kv_pos, window=kind.window, q_segment_ids=seg_q, kv_segment_ids=kv_seg
        )

        def attend_b(q, k, v):
            return attention(q, k, v, mask_spec=spec_b), (k, v)

        layer_b = Layer(lp, la_b, bcfg.peft, key_b)
        x_b, (k_b, v_b) = decoder_layer(layer_b, compute.constrain(x_b), cfg, **rope_b.at(kind), attend=attend_b)

        def attend_c(q, k, v):
            k_m = mix(prompt_part(k), stream_part(k_b), alpha(w_k, bcfg.tau))
            v_m = mix(prompt_part(v), stream_part(v_b), alpha(w_v, bcfg.tau))
            o = attention(q, jnp.concatenate([k_m, k], 1), jnp.concatenate([v_m, v], 1), mask_spec=spec_c)
            return o, (k_m, v_m)

        layer_c = Layer(lp, la_c, bcfg.peft, key_c)
        x_c, mixed = decoder_layer(layer_c, compute.constrain(x_c), cfg, **rope_c.at(kind), attend=attend_c)
        return (x_c, x_b), mixed if return_mixed_cache else None

    keys = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    xs = (
        base["layers"],
        causal_set.get("layers", {}),
        bidir_set.get("layers", {}),
        weights["w_k"],
        weights["w_v"],
        *(layer_keys(k, cfg.num_layers) for k in keys),
    )
    (x_c, _), mixed = scan_layers(body, (x_c, x_b), xs, cfg, compute)
    return (x_c, mixed) if return_mixed_cache else x_c


def bitune_logits(
    base,
    trainable,
    batch: SFTBatch,
    cfg: ModelConfig,
    bcfg: BituneConfig,
    *,
    prompt_width: int | None = None,
    compute: Compute = Compute(),
    logit_rows: jax.Array | None = None,  # [batch, rows] int32: unembed only these rows (scoring needs no more)
) -> jax.Array:
    """Float32 logits `[batch, seq, vocab]` (`[batch, rows, vocab]` with `logit_rows`); row t predicts token t + 1
    (answer rows: t >= P - 1)."""
    x = bitune_streams(
        base,
        trainable,
        batch.tokens,
        batch.positions,
        batch.prompt_len - 1,
        cfg,
        bcfg,
        prompt_width=prompt_width,
        compute=compute,
    )
    if logit_rows is not None:
        x = jnp.take_along_axis(x, logit_rows[..., None], axis=1)
    return unembed(base, x, cfg)


def bitune_loss(
    trainable,
    base,
    batch: SFTBatch | PackedBatch,
    cfg: ModelConfig,
    bcfg: BituneConfig,
    *,
    prompt_width: int | None = None,
    answer_width: int | None = None,
    compute: Compute = Compute(),
    dropout_key: jax.Array | None = None,
    per_token: bool = False,  # the loss is the mean over the batch's answer tokens, not over its examples
):
    """`(loss, metrics)`, differentiable in `trainable` (both adapter sets and the mixing weights).

    Only answer rows are unembedded; `prompt_width` / `answer_width` (static, see `SFTBatch.widths`) bound the
    bidirectional stream and the answer rows so that padding costs no compute.
    """
    if isinstance(batch, PackedBatch):
        x = bitune_streams(
            base,
            trainable,
            batch.tokens,
            batch.positions,
            jnp.where(batch.segment_ids > 0, batch.prompt_len[jnp.maximum(batch.segment_ids - 1, 0)] - 1, 0),
            cfg,
            bcfg,
            compute=compute,
            dropout_key=dropout_key,
            segment_ids=batch.segment_ids,
            prompt_slots=batch.prompt_slots,
            bidir_source=batch.bidir_source,
            bidir_index=batch.bidir_index,
        )
        row, slot, targets, example = batch.answer_tokens()  # the answer tokens end to end, reduced per example
        head = functools.partial(unembed, base, cfg=cfg)
        n = batch.length.shape[0]
        return example_token_loss(x[row, slot], targets, example, n, head, compute.loss_chunk, per_token)
    x = bitune_streams(
        base,
        trainable,
        batch.tokens,
        batch.positions,
        batch.prompt_len - 1,
        cfg,
        bcfg,
        prompt_width=prompt_width,
        compute=compute,
        dropout_key=dropout_key,
    )
    rows, targets, mask = batch.answer_rows(answer_width)
    x = compute.constrain(jnp.take_along_axis(x, rows[..., None], axis=1))  # the answer rows split over devices too
    return hidden_token_loss(x, targets, mask, lambda h: unembed(base, h, cfg), compute.loss_chunk, per_token)
