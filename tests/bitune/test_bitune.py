"""The fused batched Bitune forward equals the literal three-call reference, per family."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.bitune import BituneConfig, bitune_logits, bitune_loss, init_trainable
from bitune_jax.data.batch import SFTBatch
from bitune_jax.losses import masked_token_loss
from bitune_jax.models.compute import Compute
from bitune_jax.models.transformer import forward, init_params
from bitune_jax.peft import PeftConfig
from tests.bitune.reference import FAST_COMPILE, literal_grad
from tests.tiny_models import TINY

FAMILIES = ["llama", "olmo3", "gemma3", "gemma", "qwen3"]
MAX_LEN = 16
# (prompt length, answer length): a 1-token prompt, mid-size prompts, and a prompt that fills the context.
SHAPES = [(1, 4), (5, 3), (9, 6), (MAX_LEN - 1, 1)]


def tiny_model(family):
    cfg = TINY[family].replace(max_seq_len=MAX_LEN)
    return cfg, init_params(cfg, jax.random.key(0), scale=0.1)


def perturbed_trainable(base, cfg, bcfg, seed=1):
    """Non-trivial adapters (B != 0) and mixing weights away from their init, so every path carries signal."""
    trainable = init_trainable(base, cfg, bcfg, jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(trainable)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return treedef.unflatten([x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def fused_grad(trainable, base, batch, cfg, bcfg):
    """Loss and grads with the batch's tight static widths, and full-width logits."""
    return _fused_grad(trainable, base, batch, cfg, bcfg, *batch.widths(multiple=1))


@functools.partial(
    jax.jit, static_argnames=("cfg", "bcfg", "prompt_width", "answer_width"), compiler_options=FAST_COMPILE
)
def _fused_grad(trainable, base, batch, cfg, bcfg, prompt_width, answer_width):
    (loss, _), grads = jax.value_and_grad(bitune_loss, has_aux=True)(
        trainable, base, batch, cfg, bcfg, prompt_width=prompt_width, answer_width=answer_width
    )
    return loss, grads, bitune_logits(base, trainable, batch, cfg, bcfg)


def pairs_for(cfg, seed=0, shapes=SHAPES):
    rng = np.random.RandomState(seed)
    return [(rng.randint(3, cfg.vocab_size, p).tolist(), rng.randint(3, cfg.vocab_size, a).tolist()) for p, a in shapes]


@pytest.mark.integration
@pytest.mark.parametrize("family,mixing", [(f, "per_layer") for f in FAMILIES] + [("llama", "per_kv_head")])
def test_fused_equals_literal_reference(family, mixing):
    cfg, base = tiny_model(family)
    bcfg = BituneConfig(peft=PeftConfig(rank=4, alpha=8.0), mixing=mixing)
    trainable = perturbed_trainable(base, cfg, bcfg)
    pairs = pairs_for(cfg)
    batch = SFTBatch.from_pairs(pairs, pad_id=0, max_len=MAX_LEN)

    loss, grads, logits = fused_grad(trainable, base, batch, cfg, bcfg)
    (ref_loss, ref_logits), ref_grads = literal_grad(base, trainable, pairs, cfg, bcfg)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5, rtol=0)
    for i, (p, a) in enumerate(pairs):
        np.testing.assert_allclose(logits[i, len(p) - 1 : len(p) - 1 + len(a)], ref_logits[i], atol=1e-5, rtol=0)

    flat, ref_flat = jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(ref_grads)
    assert {"causal", "bidir", "mix"} == set(grads)
    for (path, g), r in zip(flat, ref_flat):
        # atol for small entries, plus float32's relative precision for large ones: the mixing weights' gradients
        # sum over every layer's cache and reach |g| ~ 2.5, where 1e-5 absolute is 4e-6 relative (a few ulps).
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))
        assert np.abs(np.asarray(r)).max() > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"


@pytest.mark.integration
@pytest.mark.parametrize(
    "bcfg",
    [
        BituneConfig(peft=PeftConfig(rank=4), bidirectional=False),
        BituneConfig(peft=PeftConfig(rank=4), shared_adapters=True),
        BituneConfig(peft=PeftConfig(rank=4), learn_alpha=False, w_init=0.03),
        BituneConfig(peft=PeftConfig("dora", rank=4)),
        BituneConfig(peft=PeftConfig("ia3", targets=r"layers/(k|v|down)_proj")),
    ],
    ids=["causal_second_stream", "shared_adapters", "fixed_alpha", "dora", "ia3"],
)
def test_ablations_equal_literal_reference(bcfg):
    cfg, base = tiny_model("llama")
    trainable = perturbed_trainable(base, cfg, bcfg)
    pairs = pairs_for(cfg, seed=3, shapes=[(1, 3), (9, 6)])
    batch = SFTBatch.from_pairs(pairs, pad_id=0, max_len=MAX_LEN)
    loss, grads, _ = fused_grad(trainable, base, batch, cfg, bcfg)
    (ref_loss, _), ref_grads = literal_grad(base, trainable, pairs, cfg, bcfg)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5, rtol=0)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)
    assert set(grads) == set(bcfg.adapter_sets) | ({"mix"} if bcfg.learn_alpha else set())


@pytest.mark.integration
def test_alpha_zero_equals_single_lora():
    cfg, base = tiny_model("qwen3")
    bcfg = BituneConfig(peft=PeftConfig(rank=4), learn_alpha=False, w_init=0.0)
    trainable = perturbed_trainable(base, cfg, bcfg)
    batch = SFTBatch.from_pairs(pairs_for(cfg, seed=5), pad_id=0, max_len=MAX_LEN)

    def single_lora_loss(causal):
        seq = batch.tokens.shape[1]
        positions = jnp.where(jnp.arange(seq) < batch.length[:, None], jnp.arange(seq), -1)
        logits, _ = forward(base, batch.tokens, cfg, positions=positions, adapters=causal, peft=bcfg.peft)
        rows, targets, mask = batch.answer_rows()
        return masked_token_loss(jnp.take_along_axis(logits, rows[..., None], axis=1), targets, mask)[0]

    (loss, _), grads = jax.value_and_grad(bitune_loss, has_aux=True)(trainable, base, batch, cfg, bcfg)
    ref_loss, ref_grads = jax.value_and_grad(single_lora_loss)(trainable["causal"])
    # Same math; the fused call attends over [mixed | causal] keys, so sums run in another order: the loss agrees
    # to ~1e-7, and gradient entries of magnitude ~1 to a few float32 ulps of accumulated rounding (seen: 1.1e-6 on
    # an entry of 0.50, relative 8e-6), hence a relative bound on the gradients rather than an absolute 1e-6.
    np.testing.assert_allclose(loss, ref_loss, atol=1e-6, rtol=0)
    for g, r in zip(jax.tree.leaves(grads["causal"]), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, atol=1e-6, rtol=2e-5)
    for g in jax.tree.leaves(grads["bidir"]):
        assert not np.asarray(g).any()  # alpha = 0: the bidirectional set receives exactly nothing


def test_answer_rows_and_bad_input():
    batch = SFTBatch.from_pairs([([5, 6, 7], [8, 9]), ([5], [6, 7, 8])], pad_id=0, max_len=8)
    rows, targets, mask = (np.asarray(x).tolist() for x in batch.answer_rows(answer_width=3))
    assert rows == [[2, 3, 4], [0, 1, 2]] and mask == [[True, True, False], [True, True, True]]
    assert [t[:2] for t in targets] == [[8, 9], [6, 7]] and targets[1] == [6, 7, 8]
    assert batch.widths(multiple=1) == (2, 3) and batch.widths(multiple=8) == (5, 5)  # capped at seq
    with pytest.raises(ValueError, match="example 1: empty prompt"):
        SFTBatch.from_pairs([([1], [2]), ([], [2])], pad_id=0, max_len=8)
    with pytest.raises(ValueError, match="example 0: empty answer"):
        SFTBatch.from_pairs([([1], [])], pad_id=0, max_len=8)
    with pytest.raises(ValueError, match=r"example 0: prompt \(7\) \+ answer \(2\) tokens exceed the context of 8"):
        SFTBatch.from_pairs([([1] * 7, [2, 3])], pad_id=0, max_len=8)
    cfg, base = tiny_model("llama")
    trainable = init_trainable(base, cfg, BituneConfig(shared_adapters=True), jax.random.key(0))
    with pytest.raises(KeyError, match="adapter set 'bidir' does not exist; this model has: causal"):
        bitune_logits(base, trainable, batch, cfg, BituneConfig())


@pytest.mark.integration
def test_fused_with_pallas_attention_equals_literal_reference():
    """The fused forward through the Pallas kernels (interpret mode) against the XLA literal reference."""
    cfg, base = tiny_model("gemma3")
    bcfg = BituneConfig(peft=PeftConfig(rank=4, alpha=8.0))
    trainable = perturbed_trainable(base, cfg, bcfg)
    pairs = pairs_for(cfg, shapes=[(1, 3), (9, 6), (MAX_LEN - 1, 1)])
    batch = SFTBatch.from_pairs(pairs, pad_id=0, max_len=MAX_LEN)
    (loss, _), grads = jax.jit(
        jax.value_and_grad(bitune_loss, has_aux=True), static_argnums=(3, 4), static_argnames="compute"
    )(trainable, base, batch, cfg, bcfg, compute=Compute(attn_impl="pallas"))
    (ref_loss, _), ref_grads = literal_grad(base, trainable, pairs, cfg, bcfg)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5, rtol=0)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_lora_dropout_reaches_both_streams_only_with_a_key():
    """Training draws LoRA dropout masks (separately for the two streams) from the key; no key is deterministic."""
    cfg, base = tiny_model("llama")
    bcfg = BituneConfig(peft=PeftConfig("lora", rank=4, alpha=4.0, dropout=0.3))
    trainable = perturbed_trainable(base, cfg, bcfg)
    pairs = pairs_for(cfg, shapes=SHAPES[1:3])
    batch = jax.tree.map(jnp.asarray, SFTBatch.from_pairs(pairs, pad_id=0, max_len=MAX_LEN))
    with_key = jax.jit(lambda t, key: bitune_loss(t, base, batch, cfg, bcfg, dropout_key=key)[0])
    without = jax.jit(lambda t: bitune_loss(t, base, batch, cfg, bcfg)[0])

    def gap(t):  # how much dropout changes the loss
        return abs(float(with_key(t, jax.random.key(0))) - float(without(t)))

    assert float(with_key(trainable, jax.random.key(0))) == float(with_key(trainable, jax.random.key(0)))
    assert gap(trainable) > 1e-5
    # Adapters that contribute nothing (A = B = 0) see no dropout effect: the mask acts on the adapter path only.
    zero = jax.tree.map(jnp.zeros_like, trainable["causal"])
    only_bidir = {**trainable, "causal": zero}
    assert gap(only_bidir) > 1e-6  # the bidirectional stream draws its own masks
    assert gap({**only_bidir, "bidir": zero}) < 1e-7
