import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.models.compute import Compute
from bitune_jax.models.transformer import forward, init_params, layer_kinds
from tests.tiny_models import TINY


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("attn_impl", "flash", "unknown attention implementation 'flash'"),
        ("remat", "al", "unknown remat policy 'al'"),
        ("loss_chunk", -1, "loss_chunk must be >= 0"),
    ],
)
def test_bad_settings_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        Compute(**{field: value})


def test_equal_settings_share_one_compilation_and_the_dtype_reaches_the_forward():
    """Compute is a static argument: equal values hit the same cache entry; a different dtype recompiles and runs
    the forward in that dtype (float32 logits either way, bf16 rounding changes them a little)."""
    cfg = TINY["llama"]
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 8)), jnp.int32)
    traces = []

    def logits(params, tokens, compute):
        traces.append(compute)
        return forward(params, tokens, cfg, compute=compute)[0]

    run = jax.jit(logits, static_argnames="compute")
    f32 = run(params, tokens, compute=Compute())
    run(params, tokens, compute=Compute(dtype=jnp.float32, attn_impl="xla"))
    assert len(traces) == 1
    bf16 = run(params, tokens, compute=Compute(dtype=jnp.bfloat16))
    assert len(traces) == 2 and f32.dtype == bf16.dtype == jnp.float32
    diff = float(jnp.abs(f32 - bf16).max())
    assert 0 < diff < 0.1, diff


def test_remat_policies_change_memory_not_the_gradient():
    cfg = TINY["gemma3"]  # sliding and global layers: the scan's per-layer kinds matter
    params = init_params(cfg, jax.random.key(0), scale=0.1)
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 12)), jnp.int32)

    def grad(remat):
        loss = lambda p: forward(p, tokens, cfg, compute=Compute(remat=remat))[0].mean()  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    plain = grad("none")
    for remat in ("full", "dots"):
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(grad(remat))):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_layer_kinds_follow_the_config():
    cfg = TINY["gemma3"]
    kinds = layer_kinds(cfg)
    assert kinds.sliding.tolist() == [k == "sliding" for k in cfg.kinds]
    assert any(kinds.sliding.tolist()) and not all(kinds.sliding.tolist())
    windows = np.asarray(kinds.window)
    assert (windows[np.asarray(kinds.sliding)] == cfg.sliding_window).all()
    assert (windows[~np.asarray(kinds.sliding)] > 10**9).all()
