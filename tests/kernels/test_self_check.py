"""The self-check behind impl="auto": a Pallas kernel that does not compile, or computes wrong numbers, for a
combination is replaced by the blockwise path for that combination, with one line saying so; a healthy kernel is
used; an explicit impl="pallas" is never second-guessed. On CPU the kernels run in interpret mode, and "auto" is let
pick Pallas on CPU by adding it to `PALLAS_PLATFORMS`."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.kernels import MaskSpec, attention, blockwise_attention, self_check

attention_module = importlib.import_module("bitune_jax.kernels.attention")
S = 256


@pytest.fixture(autouse=True)
def pallas_on_cpu(monkeypatch):
    monkeypatch.setattr(attention_module, "PALLAS_PLATFORMS", (*attention_module.PALLAS_PLATFORMS, "cpu"))
    self_check.forget()
    yield
    self_check.forget()


def case(window: bool = False):
    q = jax.random.normal(jax.random.key(1), (1, S, 2, 32))  # grouped queries: 2 per KV head
    k, v = (jax.random.normal(jax.random.key(i), (1, S, 1, 32)) for i in (2, 3))
    positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (1, S))
    return q, k, v, MaskSpec(positions, positions, window=jnp.int32(40) if window else None)


def auto(q, k, v, spec):
    return jax.jit(lambda q, k, v: attention(q, k, v, mask_spec=spec, scale=0.2, impl="auto"))(q, k, v)


def blockwise(q, k, v, spec):
    return blockwise_attention(q, k, v, spec, scale=0.2, logit_softcap=None)


def test_a_healthy_kernel_is_verified_once_and_used(capsys):
    q, k, v, spec = case()
    out = auto(q, k, v, spec)
    assert self_check.fallbacks() == [] and len(self_check._verdicts) == 1
    np.testing.assert_allclose(out, attention(q, k, v, mask_spec=spec, scale=0.2, impl="pallas"), rtol=0, atol=0)
    auto(q, k, v, case(window=True)[3])  # another mask kind: a check of its own
    assert len(self_check._verdicts) == 2 and "self-check" not in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["compile", "wrong"])
def test_a_failing_or_wrong_kernel_falls_back_to_blockwise_for_its_combination(monkeypatch, capsys, fault):
    real = attention_module.flash_attention

    def planted(q, *args, **kwargs):
        if fault == "compile":
            raise NotImplementedError("Mosaic cannot lower this block shape")
        return real(q, *args, **kwargs) * 1.01

    monkeypatch.setattr(attention_module, "flash_attention", planted)
    q, k, v, spec = case()
    out = auto(q, k, v, spec)
    np.testing.assert_array_equal(out, jax.jit(blockwise)(q, k, v, spec))
    line = capsys.readouterr().out
    assert "the Pallas kernel failed its self-check for cpu float32, head dim 32, causal mask:" in line
    assert ("does not compile (NotImplementedError" if fault == "compile" else "its out differs") in line
    assert "impl='auto' uses the blockwise XLA path for it" in line
    (record,) = self_check.fallbacks()
    assert record["head_dim"] == 32 and record["dtype"] == "float32" and record["reason"] in line
    auto(q, k, v, spec)
    assert capsys.readouterr().out == ""  # cached: checked and said once
    if fault == "compile":
        with pytest.raises(NotImplementedError, match="Mosaic cannot lower"):  # explicit: no second-guessing
            attention(q, k, v, mask_spec=spec, scale=0.2, impl="pallas")


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["compile", "wrong"])
def test_a_run_on_a_broken_kernel_trains_as_blockwise_and_records_the_fallback(monkeypatch, tmp_path, capsys, fault):
    """A run with model.attn_impl=auto on a platform where the planted kernel does not compile, or is wrong: the
    losses of a blockwise run, bitwise; the fallback printed and kept in run.json and summary.json."""
    import json

    from bitune_jax.train.loop import run
    from tests.train.test_loop import step_losses
    from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

    model = write_tiny_model(tmp_path / "model", smollm2_tokenizer())
    settings = {"saturation.enabled": False, "train.epochs": 2}
    run(tiny_config(model, tmp_path / "blockwise", **settings, **{"model.attn_impl": "blockwise"}))
    real = attention_module.flash_attention

    def planted(*args, **kwargs):
        if fault == "compile":
            raise NotImplementedError("Mosaic cannot lower this block shape")
        return real(*args, **kwargs) * 1.01

    monkeypatch.setattr(attention_module, "flash_attention", planted)
    summary = run(tiny_config(model, tmp_path / "auto", **settings, **{"model.attn_impl": "auto"}))
    assert step_losses(tmp_path / "auto") == step_losses(tmp_path / "blockwise")
    assert "the Pallas kernel failed its self-check for cpu float32, head dim 8" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "auto" / "run.json").read_text())["attention_fallbacks"]
    assert recorded == summary["attention_fallbacks"] and recorded[0]["head_dim"] == 8
