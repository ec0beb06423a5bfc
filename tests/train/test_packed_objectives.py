"""Packing is a pure speed-up: one packed batch gives the loss, the token accuracy, every per-example statistic and
every gradient of the same examples unpacked (float32, 1e-5), for every objective, adapter kind and attention
implementation, on tiny models of every family. And a packing whose segments may see each other is caught.

The unit tier keeps the leak check (an equality that must hold, then break) and the per-token normalization; the
sweeps over families, adapters and attention implementations (27 compiled objectives) are integration tests."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.bitune import BituneConfig
from bitune_jax.data import TokenizedExample
from bitune_jax.data.packing import pack
from bitune_jax.data.pipeline import collate
from bitune_jax.models.compute import Compute
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from tests.bitune.reference import FAST_COMPILE
from tests.tiny_models import TINY

LORA = PeftConfig(rank=4, alpha=8.0)
TOL = dict(rtol=1e-5, atol=1e-5)
# (prompt, answer) lengths: 7 examples and a filler slot, packed into rows of 24 -> 3 rows instead of 8
SHAPES = ((3, 9), (7, 2), (1, 5), (5, 6), (2, 3), (9, 4), (4, 7))


def examples(vocab: int, shapes=SHAPES) -> list[TokenizedExample]:
    rng = np.random.RandomState(0)
    out = []
    for i, (p, a) in enumerate(shapes):
        prompt, answer = rng.randint(3, vocab, p).tolist(), rng.randint(3, vocab, a).tolist()
        out.append(TokenizedExample(prompt_ids=prompt, answer_ids=answer, source=f"row {i}"))
    return out


def objective(kind: str, cfg, impl: str = "xla", **bitune) -> Objective:
    compute = Compute(attn_impl=impl)
    if kind == "full":
        return Objective(kind="full", cfg=cfg, compute=compute)
    if kind in ("lora", "dora", "ia3"):
        peft = LORA if kind == "lora" else dataclasses.replace(LORA, method=kind)
        return Objective(kind="peft", cfg=cfg, peft=peft, compute=compute)
    return Objective(kind="bitune", cfg=cfg, bitune=BituneConfig(peft=LORA, **bitune), compute=compute)


def batches(cfg, method: str = "first_fit", capacity: int = 24, shapes=SHAPES):
    ex = examples(cfg.vocab_size, shapes)
    ids = np.asarray([*range(len(ex)), -1])
    unpacked = collate(ex, ids, 16, pad_id=0)
    packed = pack(ex, ids, capacity, pad_id=0, method=method, multiple=8, prompt_rows=True)
    return unpacked, packed


def loss_and_grads(obj: Objective, params, batch, answer_width: int):
    trainable, frozen = obj.split(params, jax.random.key(1))
    if obj.kind == "bitune":  # mixing weights away from their start, so both streams matter
        trainable["mix"] = jax.tree.map(lambda w: w + 0.3, trainable["mix"])
    if obj.kind == "peft" or obj.kind == "bitune":  # LoRA's B starts at 0: move it so adapters change the output
        trainable = jax.tree.map(lambda x: x + 0.05 * jnp.cos(jnp.arange(x.size).reshape(x.shape)), trainable)
    prompt_width = None if obj.kind != "bitune" or hasattr(batch, "segment_ids") else 16
    fn = functools.partial(obj.loss, prompt_width=prompt_width, answer_width=answer_width)
    grad = jax.jit(jax.value_and_grad(fn, has_aux=True), compiler_options=FAST_COMPILE)
    (loss, metrics), grads = grad(trainable, frozen, batch)
    return loss, metrics, grads


def assert_same(cfg, obj: Objective, method: str = "first_fit"):
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    unpacked, packed = batches(cfg, method)
    assert packed.tokens.shape[0] < unpacked.tokens.shape[0]  # it packed
    a = loss_and_grads(obj, params, unpacked, 16)
    b = loss_and_grads(obj, params, packed, 16)
    np.testing.assert_allclose(b[0], a[0], **TOL)
    for key in ("token_accuracy", "tokens", "correct", "per_example_loss", "per_example_accuracy"):
        np.testing.assert_allclose(b[1][key], a[1][key], **TOL, err_msg=key)
    for path, ga, gb in zip(jax.tree_util.tree_leaves_with_path(a[2]), jax.tree.leaves(a[2]), jax.tree.leaves(b[2])):
        np.testing.assert_allclose(gb, ga, **TOL, err_msg=jax.tree_util.keystr(path[0]))


@pytest.mark.integration
@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("kind", ["full", "lora", "bitune"])
def test_packed_equals_unpacked_on_every_family(family, kind):
    cfg = TINY[family].replace(max_seq_len=32)
    assert_same(cfg, objective(kind, cfg))


@pytest.mark.integration
@pytest.mark.parametrize(
    "kind, bitune",
    [
        ("dora", {}),
        ("ia3", {}),
        ("bitune", {"bidirectional": False}),
        ("bitune", {"shared_adapters": True}),
    ],
)
def test_packed_equals_unpacked_for_every_adapter_and_bitune_variant(kind, bitune):
    cfg = TINY["llama"].replace(max_seq_len=32)
    assert_same(cfg, objective(kind, cfg, **bitune))


@pytest.mark.integration
@pytest.mark.parametrize("impl", ["blockwise", "pallas"])
@pytest.mark.parametrize("kind", ["full", "bitune"])
def test_packed_equals_unpacked_for_every_attention_implementation(impl, kind):
    cfg = TINY["gemma3"].replace(max_seq_len=32)  # sliding-window layers too
    assert_same(cfg, objective(kind, cfg, impl))


@pytest.mark.parametrize("kind", ["lora", pytest.param("bitune", marks=pytest.mark.integration)])
def test_per_token_normalization_packed_equals_unpacked(kind):
    cfg = TINY["qwen3"].replace(max_seq_len=32)
    obj = dataclasses.replace(objective(kind, cfg), loss_norm="per_token")
    assert_same(cfg, obj)
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    unpacked, _ = batches(cfg)
    per_token = loss_and_grads(obj, params, unpacked, 16)
    per_example = loss_and_grads(objective(kind, cfg), params, unpacked, 16)
    assert not np.isclose(per_token[0], per_example[0])  # a different number, same per-example statistics
    np.testing.assert_allclose(per_token[1]["per_example_loss"], per_example[1]["per_example_loss"], **TOL)


@pytest.mark.integration
def test_best_fit_packs_the_same_examples():
    cfg = TINY["qwen3"].replace(max_seq_len=32)
    assert_same(cfg, objective("bitune", cfg), method="best_fit")


@pytest.mark.parametrize("kind", ["full", pytest.param("bitune", marks=pytest.mark.integration)])
def test_segments_that_see_each_other_change_the_loss(kind):
    """The check above can fail: one segment id for all examples of a row lets them attend to each other. (Equal
    prompt lengths, so that Bitune's per-token prompt lengths, read through the segment ids, stay right.)"""
    cfg = TINY["llama"].replace(max_seq_len=32)
    obj = objective(kind, cfg)
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    unpacked, packed = batches(cfg, capacity=32, shapes=((4, 5), (4, 3), (4, 6)))
    assert packed.tokens.shape[0] == 1
    a = loss_and_grads(obj, params, unpacked, 16)
    np.testing.assert_allclose(loss_and_grads(obj, params, packed, 16)[0], a[0], **TOL)
    leaky = packed._replace(segment_ids=np.where(packed.segment_ids > 0, 1, 0).astype(np.int32))
    b = loss_and_grads(obj, params, leaky, 16)
    assert not np.allclose(b[1]["per_example_loss"], a[1]["per_example_loss"], **TOL)
