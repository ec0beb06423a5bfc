"""The train step: gradient accumulation equals the large batch; a non-finite loss leaves the state untouched."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train import epoch_stats
from bitune_jax.train.objectives import Objective
from bitune_jax.train.step import init_state, loop_step, make_optimizer, make_schedule, train_step, warmup_updates

CFG = ModelConfig(
    family="llama",
    vocab_size=64,
    dim=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    max_seq_len=32,
)


def _batch(rows):
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 64, size=(2, 12)).astype(np.int32)
    full = SFTBatch(tokens, prompt_len=np.array([3, 5], np.int32), length=np.array([12, 9], np.int32))
    return jax.tree.map(lambda v: jnp.asarray(v[rows]), full)


def _step(objective, optimizer, schedule):
    """The train step, jitted as the trainer runs it (eagerly, a scanned model dispatches op by op: slow)."""
    return jax.jit(functools.partial(train_step, objective=objective, optimizer=optimizer, schedule=schedule))


@pytest.mark.integration
def test_accumulating_two_halves_equals_one_batch():
    objective = Objective(kind="peft", cfg=CFG, peft=PeftConfig(rank=4))
    trainable, frozen = objective.split(init_params(CFG, jax.random.key(0), scale=0.1), jax.random.key(1))
    schedule = make_schedule("constant", 1e-2, 10, 0.0)
    kw = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=None)
    one = make_optimizer(schedule, **kw)
    acc = make_optimizer(schedule, accumulate=2, **kw)
    big, _ = _step(objective, one, schedule)(init_state(trainable, one), frozen, _batch(slice(0, 2)))
    state, acc_step = init_state(trainable, acc), _step(objective, acc, schedule)
    for rows in (slice(0, 1), slice(1, 2)):
        state, _ = acc_step(state, frozen, _batch(rows))
    for a, b in zip(jax.tree.leaves(big.trainable), jax.tree.leaves(state.trainable)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert any(
        np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        for a, b in zip(jax.tree.leaves(big.trainable), jax.tree.leaves(trainable))
    )


def test_non_finite_step_keeps_the_state():
    objective = Objective(kind="full", cfg=CFG)
    params = init_params(CFG, jax.random.key(0), scale=0.1)
    params["embed"] = params["embed"].at[0, 0].set(jnp.nan)
    trainable, frozen = objective.split(params, jax.random.key(1))
    schedule = make_schedule("constant", 1e-2, 10, 0.0)
    opt = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    state = init_state(trainable, opt)
    batch = _batch(slice(0, 2))
    batch = batch._replace(tokens=batch.tokens.at[0, 0].set(0))
    new, metrics = _step(objective, opt, schedule)(state, frozen, batch)
    assert not bool(metrics["finite"])
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_loop_step_applies_nothing_once_halted_and_moves_on_when_skipping():
    """After a non-finite step the loop's step (halt) leaves the whole state, step count included, as it was; under
    skip_batch the step count moves on and the weights stay. A finite step updates both."""
    objective = Objective(kind="full", cfg=CFG)
    trainable, frozen = objective.split(init_params(CFG, jax.random.key(0), scale=0.1), jax.random.key(1))
    schedule = make_schedule("constant", 1e-2, 10, 0.0)
    opt = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0)
    state = init_state(trainable, opt)
    batch = _batch(slice(0, 2))._replace(example_id=jnp.array([0, 1], jnp.int32))
    kw = dict(objective=objective, optimizer=opt, schedule=schedule)
    step = jax.jit(functools.partial(loop_step, **kw))
    skip = jax.jit(functools.partial(loop_step, halt=False, **kw))
    fresh = epoch_stats.empty(2)
    halted = fresh._replace(bad_batch=jnp.int32(0))  # an earlier step (batch 0) went non-finite
    moved, _, _ = step(state, frozen, batch, fresh, jnp.int32(0))
    kept, _, _ = step(state, frozen, batch, halted, jnp.int32(0))
    assert int(moved.step) == 1 and any(
        np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        for a, b in zip(jax.tree.leaves(moved.trainable), jax.tree.leaves(state.trainable))
    )
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = dict(trainable, embed=trainable["embed"].at[0, 0].set(jnp.nan))  # token 0's row: a NaN loss
    poisoned = init_state(params, opt)
    bad = batch._replace(tokens=batch.tokens.at[0, 0].set(0))
    skipped, stats, _ = skip(poisoned, frozen, bad, fresh, jnp.int32(0))
    assert int(skipped.step) == 1 and int(stats.skipped) == 1
    for a, b in zip(jax.tree.leaves(skipped.trainable), jax.tree.leaves(poisoned.trainable)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.integration
def test_loss_chunk_gives_the_same_loss_and_gradients():
    from bitune_jax.bitune import BituneConfig

    params = init_params(CFG, jax.random.key(0), scale=0.1)
    batch = _batch(slice(0, 2))
    for kind, extra in (("full", {}), ("bitune", {"bitune": BituneConfig(peft=PeftConfig(rank=4))})):
        plain = Objective(kind=kind, cfg=CFG, **extra)
        chunked = Objective(kind=kind, cfg=CFG, compute=Compute(loss_chunk=4), **extra)
        trainable, frozen = plain.split(params, jax.random.key(1))
        (a, _), ga = jax.jit(jax.value_and_grad(plain.loss, has_aux=True))(trainable, frozen, batch)
        (b, _), gb = jax.jit(jax.value_and_grad(chunked.loss, has_aux=True))(trainable, frozen, batch)
        np.testing.assert_allclose(b, a, rtol=1e-6)
        for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
            np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


@pytest.mark.integration
def test_dropout_masks_follow_the_step_number():
    """The step draws LoRA dropout from fold_in(key(seed), step): the same step number repeats exactly (so a
    resumed run draws the masks it would have drawn), another step or seed draws others."""
    schedule = make_schedule("constant", 1e-2, 10, 0.0)
    opt = make_optimizer(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=None)

    @functools.cache
    def step_fn(dropout, seed):
        objective = Objective(kind="peft", cfg=CFG, peft=PeftConfig(rank=4, dropout=dropout), seed=seed)
        trainable, frozen = objective.split(init_params(CFG, jax.random.key(0), scale=0.1), jax.random.key(1))
        trainable = jax.tree.map(lambda x: x + 0.1, trainable)  # B != 0: the adapter path carries signal
        return _step(objective, opt, schedule), init_state(trainable, opt), frozen

    def first_loss(dropout, seed, step):
        run, state, frozen = step_fn(dropout, seed)
        state = state._replace(step=jnp.asarray(step, jnp.int32))
        return float(run(state, frozen, _batch(slice(0, 2)))[1]["loss"])

    assert first_loss(0.3, 0, 4) == first_loss(0.3, 0, 4)
    assert first_loss(0.3, 0, 4) != first_loss(0.3, 0, 5)
    assert first_loss(0.3, 0, 4) != first_loss(0.3, 1, 4)
    assert first_loss(0.0, 0, 4) == first_loss(0.0, 0, 5)  # no dropout: the key changes nothing


def test_bf16_parameters_keep_float32_moments_and_update_math():
    """`0.999 * nu` is below bf16 resolution: moments (and accumulated gradients) stay float32 unless asked."""
    params = {"w": jnp.asarray(np.random.RandomState(0).randn(8, 8), jnp.bfloat16)}
    grads = {"w": jnp.asarray(np.random.RandomState(1).randn(8, 8) * 1e-3, jnp.bfloat16)}
    schedule = make_schedule("constant", 1e-2, 10, 0.0)
    kw = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=None)
    for accumulate in (1, 2):
        state = make_optimizer(schedule, accumulate=accumulate, **kw).init(params)
        dtypes = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}, (accumulate, dtypes)
        low = make_optimizer(schedule, accumulate=accumulate, moments_dtype=jnp.bfloat16, **kw).init(params)
        assert jnp.dtype(jnp.bfloat16) in {x.dtype for x in jax.tree.leaves(low)}
    opt = make_optimizer(schedule, **kw)
    updates, _ = opt.update(grads, opt.init(params), params)
    reference = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)  # on float32 copies
    f32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    expected, _ = reference.update(jax.tree.map(lambda x: x.astype(jnp.float32), grads), reference.init(f32), f32)
    assert updates["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(updates["w"]), np.asarray(expected["w"]))


def _hf_schedule(kind: str, step: int, warmup: int, total: int) -> float:
    """transformers' `get_{linear,cosine}_schedule_with_warmup` lr_lambda, transcribed (optimization.py)."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + float(np.cos(np.pi * 0.5 * 2.0 * progress))))


def test_warmup_is_the_authors_floor_and_the_schedule_is_transformers():
    """Both papers' code warms up for `total // 10` updates (repetition `train.py`; Bitune's `instruct.sh` and
    `downstream.sh`: `$((max_train_steps / 10))`) and steps transformers' schedules once per update."""
    assert [warmup_updates(0.1, t) for t in range(1, 2001)] == [t // 10 for t in range(1, 2001)]
    assert warmup_updates(0.29, 100) == 29 and warmup_updates(0.0, 50) == 0 and warmup_updates(1.0, 7) == 7
    for kind, total in (("linear", 747), ("linear", 9), ("cosine", 9), ("cosine", 128), ("linear", 3000)):
        schedule = make_schedule(kind, 1.0, total, 0.1)
        ours = np.asarray([float(schedule(s)) for s in range(total)])
        theirs = np.asarray([_hf_schedule(kind, s, total // 10, total) for s in range(total)])
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=f"{kind} over {total} updates")
