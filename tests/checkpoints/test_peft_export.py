"""A LoRA adapter export loads in Hugging Face peft onto the exported base and gives the logits of the project's
unmerged adapters (float32, 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.checkpoints.hf import save_hf
from bitune_jax.checkpoints.peft_export import save_peft_adapter
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import forward, init_params
from bitune_jax.peft import PeftConfig, init_adapters

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

CFG = ModelConfig(
    family="llama",
    vocab_size=97,
    dim=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    mlp_dim=96,
    max_seq_len=64,
    bos_id=1,
    eos_ids=(2,),
    pad_id=0,
)


def test_lora_export_loads_in_peft_with_the_same_logits(tmp_path):
    import peft as hf_peft  # imports torch: here, so that collecting the unit tier does not
    import torch
    import transformers

    params = jax.tree.map(lambda x: x * 4, init_params(CFG, jax.random.key(0)))  # logits far from uniform
    lora = PeftConfig(rank=4, alpha=8.0)
    adapters = init_adapters(params, lora, jax.random.key(1))
    adapters = jax.tree.map(  # non-zero B, so the adapters change the logits
        lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape) if x.ndim == 3 else x, adapters
    )
    save_hf(tmp_path / "base", CFG, jax.tree.map(np.asarray, params))
    save_peft_adapter(tmp_path / "adapter", adapters, lora, CFG, base_model=str(tmp_path / "base"))
    tokens = np.random.RandomState(0).randint(3, 97, size=(2, 12)).astype(np.int32)
    ours = np.asarray(forward(params, jnp.asarray(tokens), CFG, adapters=adapters, peft=lora)[0])
    base = np.asarray(forward(params, jnp.asarray(tokens), CFG)[0])
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    model = hf_peft.PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
    with torch.no_grad():
        theirs = model(input_ids=torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    assert np.abs(ours - base).max() > 1e-2  # the adapters matter
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="merge it into the base"):
        save_peft_adapter(tmp_path / "dora", adapters, PeftConfig(method="dora"), CFG)
