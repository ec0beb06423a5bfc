"""Every family against Hugging Face transformers on tiny random models written by the test. The decoder's own
invariants (padding, the KV cache) are tests/models/test_transformer.py's, in the unit tier. torch and transformers
are imported by the tests that use them, so collecting the unit tier imports neither."""

import numpy as np
import pytest

import bitune_jax as bj
from bitune_jax.data.batch import PromptBatch
from tests.tiny_models import TINY, tiny_prompts

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

FAMILIES = list(TINY)  # the families of tests/hf_tiny.py (the last test holds the two equal)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    from tests.hf_tiny import write_tiny

    directory = tmp_path_factory.mktemp(request.param)
    model = write_tiny(request.param, directory)
    return request.param, directory, model, bj.load(directory)


def _hf_logits(model, batch):
    import torch

    mask = batch.positions >= 0
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(batch.tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(np.maximum(batch.positions, 0), dtype=torch.long),
        )
    return out.logits.numpy(), mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_match_transformers_with_padding(tiny, side):
    _, _, model, lm = tiny
    batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side=side)
    ref, mask = _hf_logits(model, batch)
    ours = np.asarray(lm.logits(batch.tokens, batch.positions))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def _greedy_without_cache(lm, prompt, n):
    """Recompute the whole sequence every step (one fixed-width buffer, so one compilation)."""
    tokens = np.zeros((1, len(prompt) + n), np.int32)
    tokens[0, : len(prompt)] = prompt
    for t in range(len(prompt), len(prompt) + n):
        positions = np.where(np.arange(tokens.shape[1]) < t, np.arange(tokens.shape[1]), -1)[None]
        tokens[0, t] = int(np.asarray(lm.logits(tokens, positions))[0, t - 1].argmax())
    return tokens[0, len(prompt) :].tolist()


def test_greedy_cache_equals_no_cache_and_transformers(tiny):
    import torch

    _, _, model, lm = tiny
    lm = bj.LM(cfg=lm.cfg.replace(eos_ids=()), params=lm.params)  # decode all 16 tokens
    prompts = tiny_prompts(1)
    cached = lm.generate(prompts, max_new_tokens=16)
    for prompt, got in zip(prompts, cached):
        assert got == _greedy_without_cache(lm, prompt, 16)
    with torch.no_grad():
        hf = model.generate(
            torch.tensor([prompts[0]]),
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert cached[0] == hf[0, len(prompts[0]) :].tolist()


def test_export_reloads_in_transformers(tiny, tmp_path):
    import torch
    import transformers

    _, _, model, lm = tiny
    lm.save_hf(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(reloaded) is type(model)
    batch = PromptBatch.pad(tiny_prompts(2), pad_id=0, side="right")
    ref, mask = _hf_logits(model, batch)
    again, _ = _hf_logits(reloaded, batch)
    np.testing.assert_allclose(again[mask], ref[mask], atol=1e-5, rtol=0)
    ours = np.asarray(bj.load(tmp_path).logits(batch.tokens, batch.positions))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def test_bfloat16_compute_tracks_float32(tiny):
    _, directory, _, lm = tiny
    batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side="right")
    mask = batch.positions >= 0
    f32 = np.asarray(lm.logits(batch.tokens, batch.positions))
    bf16 = np.asarray(bj.load(directory, dtype="bfloat16").logits(batch.tokens, batch.positions))
    assert bf16.dtype == np.float32
    # bf16 keeps 8 mantissa bits; through 4 layers the logits (|x| ~ 0.1-1) drift by a few 1e-2 at most.
    np.testing.assert_allclose(bf16[mask], f32[mask], atol=5e-2, rtol=0)
    assert (bf16[mask].argmax(-1) == f32[mask].argmax(-1)).mean() > 0.9


def test_sharded_checkpoint_loads(tmp_path):
    from tests.hf_tiny import write_tiny

    model = write_tiny("qwen3", tmp_path / "single")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side="right")
    a = np.asarray(bj.load(tmp_path / "single").logits(batch.tokens, batch.positions))
    b = np.asarray(bj.load(tmp_path / "sharded").logits(batch.tokens, batch.positions))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", ["olmo3", "gemma3"])  # the families with sliding windows
def test_pallas_attention_matches_transformers(family, tmp_path):
    """The same model with the Pallas flash-attention kernels (interpret mode on CPU), both padding sides."""
    from tests.hf_tiny import write_tiny

    model = write_tiny(family, tmp_path)
    lm = bj.load(tmp_path, attn_impl="pallas")
    for side in ("left", "right"):
        batch = PromptBatch.pad(tiny_prompts(), pad_id=0, side=side)
        ref, mask = _hf_logits(model, batch)
        ours = np.asarray(lm.logits(batch.tokens, batch.positions))
        np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-4, rtol=0)


def test_the_unit_tiers_tiny_configs_are_what_config_from_hf_reads():
    """tests/tiny_models.py writes these configs out for the unit tier (no transformers there): they must stay
    what the transformers configs of tests/hf_tiny.py load as."""
    from bitune_jax.checkpoints.hf_config import config_from_hf
    from tests.hf_tiny import tiny_configs

    assert TINY == {name: config_from_hf(hf.to_dict()) for name, hf in tiny_configs().items()}
