"""What each objective trains and the loss it minimizes, on a tiny model: `split`'s trainable and frozen trees for
full fine-tuning, PEFT and Bitune, and each loss against a direct numpy computation from that objective's own
logits (the mean over examples of each example's mean answer-token cross-entropy), with a dummy row in the batch."""

import functools

import jax
import numpy as np
import pytest

from bitune_jax.bitune import BituneConfig, bitune_logits
from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.transformer import forward, init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.objectives import Objective
from tests.bitune.reference import FAST_COMPILE
from tests.tiny_models import TINY

CFG = TINY["qwen3"].replace(num_layers=2, max_seq_len=16)
LORA = PeftConfig(rank=4, alpha=8.0)
OBJECTIVES = {
    "full": Objective(kind="full", cfg=CFG),
    "peft": Objective(kind="peft", cfg=CFG, peft=LORA),
    "bitune": Objective(kind="bitune", cfg=CFG, bitune=BituneConfig(peft=LORA)),
}
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0), scale=0.1)  # logits far from uniform


@pytest.fixture(scope="module")
def batch():
    """Three examples of different prompt and answer lengths, then a dummy row as the pipeline's `collate` writes
    it (pad tokens, prompt_len == length == 1, example_id -1): no answer token, so it must count for nothing."""
    rng = np.random.RandomState(0)
    pairs = [(rng.randint(3, 97, p).tolist(), rng.randint(3, 97, a).tolist()) for p, a in ((3, 9), (7, 2), (1, 5))]
    real = SFTBatch.from_pairs(pairs, pad_id=0, max_len=16, seq_len=12)
    return SFTBatch(
        tokens=np.concatenate([real.tokens, np.zeros((1, 12), np.int32)]),
        prompt_len=np.append(real.prompt_len, 1).astype(np.int32),
        length=np.append(real.length, 1).astype(np.int32),
        example_id=np.asarray([0, 1, 2, -1], np.int32),
    )


@functools.cache
def jitted_loss(kind):
    return jax.jit(OBJECTIVES[kind].loss, compiler_options=FAST_COMPILE)


@functools.partial(jax.jit, static_argnames="peft", compiler_options=FAST_COMPILE)
def _logits(params, batch, adapters=None, peft=None):
    return forward(params, batch.tokens, CFG, positions=batch.positions, adapters=adapters, peft=peft)[0]


_bitune_logits = jax.jit(
    functools.partial(bitune_logits, cfg=CFG, bcfg=OBJECTIVES["bitune"].bitune), compiler_options=FAST_COMPILE
)


def perturbed(tree, seed=2):
    """Every trainable leaf moved off its init (B != 0, mixing weights away from tau): every path carries signal."""
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda x: x + 0.1 * rng.randn(*x.shape).astype(np.float32), tree)


def numpy_loss(logits, batch):
    """Row t predicts token t + 1; an example's answer tokens are P <= t + 1 < length. Mean per example, then over
    the examples that have an answer token, in float64."""
    logits = np.asarray(logits, np.float64)
    per_example = []
    for row, tokens, p, n in zip(logits, batch.tokens, batch.prompt_len, batch.length):
        t = np.arange(p - 1, n - 1)
        if not len(t):
            continue
        logz = np.log(np.exp(row[t]).sum(-1))
        per_example.append(np.mean(logz - row[t, tokens[t + 1]]))
    return np.mean(per_example), len(per_example)


def test_full_trains_every_parameter_and_freezes_nothing(params):
    trainable, frozen = OBJECTIVES["full"].split(params, jax.random.key(1))
    assert trainable is params and frozen == {}


def _assert_fresh_lora(adapters, params):
    """One LoRA pair per projection kernel, A `[L, in, r]`, B `[L, r, out]` and zero (the adapter is the identity)."""
    assert set(adapters) == {"layers"} and set(adapters["layers"]) == PROJECTIONS
    for name, entry in adapters["layers"].items():
        layers, d_in, d_out = params["layers"][name].shape
        assert set(entry) == {"lora_a", "lora_b"}
        assert entry["lora_a"].shape == (layers, d_in, LORA.rank) and np.abs(entry["lora_a"]).max() > 0
        assert entry["lora_b"].shape == (layers, LORA.rank, d_out) and not np.asarray(entry["lora_b"]).any()


def test_peft_trains_fresh_adapters_beside_the_frozen_base(params, batch):
    """B = 0: the first loss is the base model's (the full objective's on the same weights)."""
    trainable, frozen = OBJECTIVES["peft"].split(params, jax.random.key(1))
    assert frozen is params
    _assert_fresh_lora(trainable, params)
    peft_loss, _ = jitted_loss("peft")(trainable, frozen, batch)
    base_loss, _ = jitted_loss("full")(params, {}, batch)
    np.testing.assert_allclose(peft_loss, base_loss, rtol=1e-6)


def test_bitune_trains_two_adapter_sets_and_the_mixing_weights(params):
    bcfg = OBJECTIVES["bitune"].bitune
    trainable, frozen = OBJECTIVES["bitune"].split(params, jax.random.key(1))
    assert frozen is params and set(trainable) == {"causal", "bidir", "mix"}
    for name in ("causal", "bidir"):
        _assert_fresh_lora(trainable[name], params)
    a = trainable["causal"]["layers"]["q_proj"]["lora_a"]
    assert np.abs(a - trainable["bidir"]["layers"]["q_proj"]["lora_a"]).max() > 0  # drawn independently
    assert set(trainable["mix"]) == {"w_k", "w_v"}
    for w in trainable["mix"].values():  # one weight per layer, at tau: alpha = |w| / (tau + |w|) starts at 0.5
        assert w.shape == (CFG.num_layers,) and (np.asarray(w) == bcfg.tau).all()


@pytest.mark.parametrize("kind", ["full", "peft", "bitune"])
def test_loss_is_the_mean_over_examples_of_each_answers_mean(params, batch, kind):
    """Against numpy on the objective's own logits (the decoder's `forward`; Bitune's `bitune_logits`), with
    trained-looking adapters; the dummy row adds nothing (float32, rtol 1e-5)."""
    objective = OBJECTIVES[kind]
    trainable, frozen = objective.split(params, jax.random.key(1))
    if kind == "full":
        logits = _logits(params, batch)
    else:
        trainable = perturbed(trainable)
        if kind == "peft":
            logits = _logits(frozen, batch, trainable, LORA)
        else:
            logits = _bitune_logits(frozen, trainable, batch)
    loss, metrics = jitted_loss(kind)(trainable, frozen, batch)
    want, examples = numpy_loss(logits, batch)
    assert examples == 3
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert int(metrics["tokens"]) == sum(batch.length - batch.prompt_len) == 9 + 2 + 5
    assert float(metrics["per_example_loss"][3]) == 0.0
    if kind != "full":  # the adapters (and Bitune's mixing) change the loss: the numpy check sees them
        base, _ = numpy_loss(_logits(params, batch), batch)
        assert abs(want - base) > 1e-3
