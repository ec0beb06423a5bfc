"""LoRA, DoRA and IA3: identity at init, merge == unmerged forward, unmerge recovers the base, gradients flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import forward, init_params
from bitune_jax.peft import IA3_TARGETS, PeftConfig, init_adapters, merge, unmerge
from bitune_jax.peft.adapters import lora_dense

CFG = ModelConfig(
    family="llama", vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
)
PEFTS = {
    "lora": PeftConfig("lora", rank=4, alpha=8.0),
    "dora": PeftConfig("dora", rank=4, alpha=8.0),
    "ia3": PeftConfig("ia3", targets=IA3_TARGETS),
}
TOKENS = jnp.asarray(np.random.RandomState(0).randint(0, 64, size=(2, 9)))


@pytest.fixture(scope="module")
def base():
    return init_params(CFG, jax.random.key(0), scale=0.2)


def _perturb(adapters, key):
    """Random non-identity adapters (B != 0, m != ||W||, l != 1)."""
    leaves, treedef = jax.tree.flatten(adapters)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("method", PEFTS)
def test_fresh_adapters_leave_logits_unchanged(base, method):
    peft = PEFTS[method]
    adapters = init_adapters(base, peft, jax.random.key(1))
    plain, _ = forward(base, TOKENS, CFG)
    adapted, _ = forward(base, TOKENS, CFG, adapters=adapters, peft=peft)
    # LoRA and IA3 are exact; DoRA recomputes m * W / ||W||, equal to W up to float32 rounding (~2e-6 here).
    np.testing.assert_allclose(adapted, plain, atol=0 if method != "dora" else 1e-5, rtol=0)


@pytest.mark.parametrize("method", PEFTS)
def test_merge_equals_adapted_forward_and_unmerge_recovers_base(base, method):
    peft = PEFTS[method]
    adapters = _perturb(init_adapters(base, peft, jax.random.key(1)), jax.random.key(2))
    adapted, _ = forward(base, TOKENS, CFG, adapters=adapters, peft=peft)
    merged = merge(base, adapters, peft)
    merged_logits, _ = forward(merged, TOKENS, CFG)
    assert np.abs(np.asarray(adapted) - np.asarray(forward(base, TOKENS, CFG)[0])).max() > 1e-3  # adapters matter
    np.testing.assert_allclose(merged_logits, adapted, atol=1e-5, rtol=0)
    if method == "dora":
        with pytest.raises(ValueError, match="DoRA kernel cannot be unmerged"):
            unmerge(merged, adapters, peft)
    else:
        for a, b in zip(jax.tree.leaves(unmerge(merged, adapters, peft)), jax.tree.leaves(base)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", PEFTS)
def test_gradients_reach_every_adapter(base, method):
    peft = PEFTS[method]
    adapters = _perturb(init_adapters(base, peft, jax.random.key(1)), jax.random.key(3))

    def loss(ad):
        logits, _ = forward(base, TOKENS, CFG, adapters=ad, peft=peft)
        return jax.nn.logsumexp(logits, -1).mean()

    grads = jax.grad(loss)(adapters)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def test_targets_and_config_errors(base):
    assert set(init_adapters(base, PEFTS["lora"], jax.random.key(0))["layers"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    only_q = init_adapters(base, PeftConfig(targets=r"layers/q_proj"), jax.random.key(0))
    assert set(only_q["layers"]) == {"q_proj"} and only_q["layers"]["q_proj"]["lora_a"].shape == (2, 32, 8)
    with pytest.raises(ValueError, match="match no kernel"):
        init_adapters(base, PeftConfig(targets=r"layers/nope"), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown PEFT method"):
        PeftConfig(method="prefix")
    with pytest.raises(ValueError, match="without the PeftConfig"):
        forward(base, TOKENS, CFG, adapters=only_q)


@pytest.mark.parametrize("method", PEFTS)
def test_merged_export_reloads_with_the_adapted_logits(base, method, tmp_path):
    import bitune_jax as bj
    from bitune_jax.checkpoints.hf import save_hf

    peft = PEFTS[method]
    adapters = _perturb(init_adapters(base, peft, jax.random.key(1)), jax.random.key(2))
    adapted, _ = forward(base, TOKENS, CFG, adapters=adapters, peft=peft)
    save_hf(tmp_path, CFG, jax.tree.map(np.asarray, merge(base, adapters, peft)))
    np.testing.assert_allclose(bj.load(tmp_path).logits(np.asarray(TOKENS)), adapted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_lora_dense_backward_equals_autodiff(dtype, tol):
    """The hand-written LoRA backward (laid out for the hardware) against autodiff of the plain formula, for every
    operand including the frozen kernel. bf16 is looser: the custom backward accumulates token sums in float32."""
    ks = jax.random.split(jax.random.key(3), 5)
    x = jax.random.normal(ks[0], (2, 7, 12)).astype(dtype)  # [batch, seq, in]
    w = (0.3 * jax.random.normal(ks[1], (12, 10))).astype(dtype)
    a = (0.3 * jax.random.normal(ks[2], (12, 4))).astype(dtype)
    b = (0.3 * jax.random.normal(ks[3], (4, 10))).astype(dtype)
    probe = jax.random.normal(ks[4], (2, 7, 10))

    def loss(f):
        return lambda *ops: (f(*ops).astype(jnp.float32) * probe).sum()

    plain = loss(lambda x, w, a, b: jnp.einsum("...i,io->...o", x, w) + 0.5 * jnp.einsum("...r,ro->...o", x @ a, b))
    custom = loss(lambda x, w, a, b: lora_dense(x, x, w, a, b, 0.5))
    np.testing.assert_allclose(custom(x, w, a, b), plain(x, w, a, b), rtol=tol)
    for got, want in zip(
        jax.grad(custom, argnums=(0, 1, 2, 3))(x, w, a, b), jax.grad(plain, argnums=(0, 1, 2, 3))(x, w, a, b)
    ):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = float(jnp.abs(want.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol * scale)


def test_lora_dropout_only_in_training_and_unbiased(base):
    """Dropout acts on the adapter's input only when a key is given; a key fixes the mask; averaged over masks the
    adapted output is the deterministic one (inverted dropout); fresh adapters (B = 0) ignore it."""
    peft = PeftConfig("lora", rank=4, alpha=8.0, dropout=0.5)
    fwd = jax.jit(forward, static_argnums=2, static_argnames="peft")  # one compile per case, not one per operation
    fresh = init_adapters(base, peft, jax.random.key(1))
    adapters = _perturb(fresh, jax.random.key(2))
    plain, _ = fwd(base, TOKENS, CFG, adapters=adapters, peft=peft)
    dropped, _ = fwd(base, TOKENS, CFG, adapters=adapters, peft=peft, dropout_key=jax.random.key(5))
    again, _ = fwd(base, TOKENS, CFG, adapters=adapters, peft=peft, dropout_key=jax.random.key(5))
    other, _ = fwd(base, TOKENS, CFG, adapters=adapters, peft=peft, dropout_key=jax.random.key(6))
    no_dropout = PeftConfig("lora", rank=4, alpha=8.0)
    keyed, _ = fwd(base, TOKENS, CFG, adapters=adapters, peft=no_dropout, dropout_key=jax.random.key(5))
    np.testing.assert_array_equal(keyed, plain)
    np.testing.assert_array_equal(dropped, again)
    assert float(jnp.abs(dropped - plain).max()) > 1e-3 and float(jnp.abs(dropped - other).max()) > 1e-3
    fresh_dropped, _ = fwd(base, TOKENS, CFG, adapters=fresh, peft=peft, dropout_key=jax.random.key(5))
    base_logits, _ = fwd(base, TOKENS, CFG)
    np.testing.assert_allclose(fresh_dropped, base_logits, atol=1e-6)

    # Unbiased: the mean of one projection's output over many masks approaches the deterministic output.
    from bitune_jax.peft import dense

    layer = jax.tree.map(lambda t: t[0], adapters["layers"]["q_proj"])
    x = jax.random.normal(jax.random.key(7), (4, CFG.dim))
    w = base["layers"]["q_proj"][0]
    mean = jax.vmap(lambda k: dense(x, w, layer, peft, k))(jax.random.split(jax.random.key(8), 4000)).mean(0)
    exact = dense(x, w, layer, peft)
    delta = exact - x @ w  # the adapter's contribution, the part dropout perturbs
    assert float(jnp.abs(mean - exact).max()) < 0.05 * float(jnp.abs(delta).max())


def test_dropout_config_errors():
    with pytest.raises(ValueError, match="dropout must be in"):
        PeftConfig("lora", dropout=1.0)
    with pytest.raises(ValueError, match="LoRA setting"):
        PeftConfig("dora", dropout=0.1)


@pytest.mark.integration
def test_init_matches_peft_in_distribution():
    """peft draws LoRA A [r, in] with torch's kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(in)), std 1/sqrt(3 in); B = 0.
    DoRA's magnitude starts at the column norms of W (so the adapted kernel is W); IA3 vectors start at 1."""
    import math

    import torch

    d_in, d_out, rank = 1024, 512, 64
    params = {"layers": {"q_proj": jnp.asarray(np.random.RandomState(0).randn(2, d_in, d_out), jnp.float32)}}
    lora = init_adapters(params, PeftConfig("lora", rank=rank, targets="layers/q_proj"), jax.random.key(0))
    a = np.asarray(lora["layers"]["q_proj"]["lora_a"])
    reference = torch.empty(rank, d_in)
    torch.nn.init.kaiming_uniform_(reference, a=math.sqrt(5))  # what peft's LoraLayer.reset_lora_parameters runs
    bound = float(reference.abs().max())
    assert a.std() == pytest.approx(1 / math.sqrt(3 * d_in), rel=0.02)
    assert a.std() == pytest.approx(float(reference.std()), rel=0.02)
    assert np.abs(a).max() <= 1 / math.sqrt(d_in) and np.abs(a).max() == pytest.approx(bound, rel=0.01)
    assert not np.asarray(lora["layers"]["q_proj"]["lora_b"]).any()
    dora = init_adapters(params, PeftConfig("dora", rank=rank, targets="layers/q_proj"), jax.random.key(0))
    np.testing.assert_allclose(
        dora["layers"]["q_proj"]["dora_m"], np.linalg.norm(params["layers"]["q_proj"], axis=1), rtol=1e-6
    )
    ia3 = init_adapters(params, PeftConfig("ia3", targets="layers/q_proj"), jax.random.key(0))
    assert (np.asarray(ia3["layers"]["q_proj"]["ia3_out"]) == 1).all()
