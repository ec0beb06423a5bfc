"""The decoder's own invariants, with no reference implementation and no torch: padding on either side changes no
real token's logits, and a KV-cache prefill followed by one token at a time gives the uncached logits. Tiny random
models (tests/tiny_models.py) of every family: sliding windows of 5 tokens, shorter than the prompts (olmo3,
gemma3), QK-norm over the full width (olmo3) and per head (gemma3, qwen3), every norm layout, tied and untied
embeddings."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.data.batch import PromptBatch
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, forward, init_params, unstack_layers
from bitune_jax.tree_paths import path_name
from tests.bitune.reference import FAST_COMPILE
from tests.tiny_models import TINY, tiny_prompts

FAMILIES = list(TINY)


@functools.partial(jax.jit, static_argnames="cfg", compiler_options=FAST_COMPILE)
def _logits(params, tokens, positions, cfg):
    return forward(params, tokens, cfg, positions=positions)[0]


@functools.partial(jax.jit, static_argnames="cfg", compiler_options=FAST_COMPILE)
def _cached(params, tokens, positions, cache, cfg):
    return forward(params, tokens, cfg, positions=positions, cache=cache)


class Tiny(NamedTuple):
    """A model as `bj.LM` holds one, its forward compiled with FAST_COMPILE (half the compile time of these tiny
    programs, which is most of this file's time)."""

    cfg: ModelConfig
    params: dict

    def logits(self, tokens, positions=None) -> np.ndarray:
        """Float32 logits `[batch, seq, vocab]`; positions (-1 = padding) default to 0..seq-1."""
        tokens = np.asarray(tokens, np.int32)
        if positions is None:
            positions = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
        return np.asarray(_logits(self.params, tokens, np.asarray(positions, np.int32), self.cfg))


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request):
    """Random weights at Hugging Face's init scale (0.02) with the norm weights perturbed, as tests/hf_tiny.py's
    `write_tiny` does: norms left at their identity would hide a norm applied in the wrong place."""
    cfg = TINY[request.param]
    rng = np.random.RandomState(1)
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.3 * rng.randn(*x.shape).astype(np.float32) if "norm" in path_name(p) else x,
        init_params(cfg, jax.random.key(0)),
    )
    return Tiny(cfg, params)


def test_padding_does_not_change_real_tokens(lm):
    prompts = tiny_prompts()
    batch = PromptBatch.pad(prompts, pad_id=0, side="left")
    batched = np.asarray(lm.logits(batch.tokens, batch.positions))
    for i, p in enumerate(prompts):
        alone = np.asarray(lm.logits(np.asarray([p])))[0]
        np.testing.assert_allclose(batched[i, -len(p) :], alone, atol=1e-5, rtol=0)


def test_unmarked_padding_would_change_them(lm):
    """The tests' 1e-5 is far below what padding does when it is not marked -1: left pads given position 0 are
    attended by every real token (measured: the logits move by 0.16 to 0.8)."""
    batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side="left")
    marked = lm.logits(batch.tokens, batch.positions)
    unmarked = lm.logits(batch.tokens, np.maximum(batch.positions, 0))
    real = batch.positions >= 0
    assert np.abs(unmarked[real] - marked[real]).max() > 1e-3


def test_right_padding_does_not_change_real_tokens(lm):
    """Right padding: each row's real tokens lead, the trailing pads (position -1) are never seen."""
    prompts = tiny_prompts()
    batch = PromptBatch.pad(prompts, pad_id=0, side="right")
    batched = np.asarray(lm.logits(batch.tokens, batch.positions))
    left = PromptBatch.pad(prompts, pad_id=0, side="left")
    left_logits = np.asarray(lm.logits(left.tokens, left.positions))
    for i, p in enumerate(prompts):
        alone = np.asarray(lm.logits(np.asarray([p])))[0]
        np.testing.assert_allclose(batched[i, : len(p)], alone, atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched[i, : len(p)], left_logits[i, -len(p) :], atol=1e-5, rtol=0)


PREFILL = 4  # columns of the 12-wide batch written by the prefill; the other 8 are decoded one at a time


@pytest.mark.parametrize("side, layered", [("left", False), ("right", False), ("left", True)])
def test_prefill_then_decode_equals_the_uncached_forward(lm, side, layered):
    """Teacher-forced: the padded batch's first columns in one cached call, then one column per call; every real
    token's logits equal the uncached forward's (float32, atol 1e-5; measured <= 5e-7 on logits up to 1.5). The
    prompts are longer than the sliding window, and left padding puts positions in other slots: the cache must
    mask by position, not by slot. `layered`: per-layer weights over a layered cache, the layers unrolled."""
    tokens, positions = PromptBatch.pad(tiny_prompts(), pad_id=0, side=side)
    want = np.asarray(lm.logits(tokens, positions))
    params = unstack_layers(lm.params) if layered else lm.params
    cache = KVCache.init(lm.cfg, tokens.shape[0], tokens.shape[1], layered=layered)
    logits, cache = _cached(params, tokens[:, :PREFILL], positions[:, :PREFILL], cache, lm.cfg)
    got = [np.asarray(logits)]
    for t in range(PREFILL, tokens.shape[1]):
        logits, cache = _cached(params, tokens[:, t : t + 1], positions[:, t : t + 1], cache, lm.cfg)
        got.append(np.asarray(logits))
    got = np.concatenate(got, axis=1)
    real = positions >= 0
    assert int(cache.length) == tokens.shape[1]
    np.testing.assert_array_equal(np.asarray(cache.positions), positions)
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=0)


@functools.partial(jax.jit, static_argnames=("cfg", "kv_window"), compiler_options=FAST_COMPILE)
def _cached_window(params, tokens, positions, cache, cfg, kv_window):
    return forward(params, tokens, cfg, positions=positions, cache=cache, kv_window=kv_window)


@pytest.mark.parametrize("layered", [False, True])
def test_rows_at_their_own_offsets_equal_the_uncached_forward(lm, layered):
    """A cache with a length per row (an engine's slots): row i's tokens are written from slot i on, one a call,
    and the calls attend over the first `kv_window` slots only (every written one). Every real token's logits
    equal the uncached forward's (float32, atol 1e-5, as above); stacked, and layered as the engine decodes."""
    tokens, positions = PromptBatch.pad(tiny_prompts(), pad_id=0, side="right")
    want = np.asarray(lm.logits(tokens, positions))
    batch, width = tokens.shape
    params = unstack_layers(lm.params) if layered else lm.params
    cache = KVCache.init(lm.cfg, batch, width + batch, layered=layered)
    cache = cache._replace(length=jnp.arange(batch, dtype=jnp.int32))
    got = []
    for t in range(width):
        step = (params, tokens[:, t : t + 1], positions[:, t : t + 1], cache, lm.cfg, width + batch - 1)
        logits, cache = _cached_window(*step)
        got.append(np.asarray(logits))
    got = np.concatenate(got, axis=1)
    real = positions >= 0
    np.testing.assert_array_equal(np.asarray(cache.length), np.arange(batch) + width)
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("lm", [f for f in FAMILIES if TINY[f].sliding_window], indirect=True)
def test_the_sliding_window_is_in_force(lm):
    """The invariants above hold with the window in force: the prompts outrun it, so making every layer global
    changes the logits of the windowed families."""
    batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side="left")
    windowed = lm.logits(batch.tokens, batch.positions)
    every_layer_global = lm._replace(cfg=lm.cfg.replace(layer_kinds=(), sliding_window=None)).logits(*batch)
    real = batch.positions >= 0
    assert lm.cfg.sliding_window < max(map(len, tiny_prompts()))
    assert np.abs(windowed[real] - every_layer_global[real]).max() > 1e-3


def test_weights_and_cache_layouts_must_match(lm):
    """Per-layer weights read a layered cache and stacked weights a stacked one; a mix is refused with the fix named
    (a silent static slice of stacked weights would copy every layer's weights on every decode step)."""
    tokens = np.zeros((1, 1), np.int32)
    stacked, layered = (KVCache.init(lm.cfg, 1, 4, layered=x) for x in (False, True))
    with pytest.raises(ValueError, match="unstack_layers"):
        forward(lm.params, tokens, lm.cfg, cache=layered)
    with pytest.raises(ValueError, match="layered cache"):
        forward(unstack_layers(lm.params), tokens, lm.cfg, cache=stacked)
    assert unstack_layers(unstack_layers(lm.params))["layers"][0].keys() == lm.params["layers"].keys()


def test_unrolled_layers_keep_the_remat_policy(lm):
    """Per-layer weights run the layers unrolled under the same remat policy as the scan: each layer's backward
    recomputes it (one `checkpoint` a layer in the program, none without remat), with gradients equal to
    the scanned layers' (float32, 1e-5)."""
    tokens = jnp.asarray([tiny_prompts()[0][:8]], jnp.int32)

    def loss(params, compute):
        return jnp.mean(forward(params, tokens, lm.cfg, compute=compute)[0] ** 2)

    def checkpoints(params, compute):
        jaxpr = jax.make_jaxpr(lambda p: loss(p, compute))(params).jaxpr
        return sum(e.primitive.name in ("checkpoint", "remat2") for e in jaxpr.eqns)

    unrolled = unstack_layers(lm.params)
    assert checkpoints(unrolled, Compute(remat="full")) == lm.cfg.num_layers
    assert checkpoints(unrolled, Compute()) == 0
    got = jax.grad(lambda p: loss(p, Compute(remat="full")))(unrolled)
    want = unstack_layers(jax.grad(lambda p: loss(p, Compute()))(lm.params))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
