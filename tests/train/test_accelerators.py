"""MFU denominators from the datasheet table (measured only for unknown devices) and step FLOPs per objective."""

import jax
import numpy as np

from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.train.accelerators import datasheet_peak, peak_flops
from bitune_jax.train.performance import MatmulWeights, model_flops_per_token, step_model_flops


def test_known_devices_use_the_datasheet_and_unknown_ones_measure():
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "float32") == 156e12
    assert datasheet_peak("TPU v5 lite", "bfloat16") == 197e12  # v5e, not v5p
    assert datasheet_peak("TPU v5p", "bfloat16") == 459e12
    assert datasheet_peak("TPU v4", "bfloat16") == 275e12
    assert datasheet_peak("NVIDIA H100 PCIe", "bfloat16") is None
    calls = []
    flops, source = peak_flops("TPU v5p", "bfloat16", lambda: calls.append(1) or 1.0)
    assert flops == 459e12 and "datasheet" in source and not calls
    flops, source = peak_flops("cpu", "float32", lambda: 123.0)
    assert flops == 123.0 and "measured" in source


def test_step_flops_count_real_tokens_answer_rows_for_the_head_and_bitunes_second_stream():
    batch = SFTBatch(
        tokens=np.zeros((3, 64), np.int32), prompt_len=np.array([10, 20, 0]), length=np.array([40, 64, 0])
    )  # the last row is filler
    weights, layers, dim = MatmulWeights(stack=1000, head=300), 2, 16
    for kind, grads in (("full", True), ("peft", False)):
        assert step_model_flops(kind, batch, 32, weights, layers, dim) == (
            104 * model_flops_per_token(1000, 64, layers, dim, grads)  # every real token through the stack
            + 74 * model_flops_per_token(300, 0, layers, dim, grads)  # the head on the 30 + 44 answer tokens
        )
    bitune = step_model_flops("bitune", batch, 32, weights, layers, dim)
    peft = step_model_flops("peft", batch, 32, weights, layers, dim)
    assert bitune == peft + (9 + 19) * model_flops_per_token(1000, 32, layers, dim, False)


def test_matmul_weights_are_the_layer_kernels_and_the_head():
    cfg = ModelConfig(
        family="llama",
        vocab_size=97,
        dim=32,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=64,
        max_seq_len=64,
    )
    weights = MatmulWeights.of(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))), cfg)
    per_layer = 32 * 4 * 8 + 2 * 32 * 2 * 8 + 4 * 8 * 32 + 3 * 32 * 64  # q, k and v, o, gate/up/down
    assert weights == MatmulWeights(stack=3 * per_layer, head=97 * 32)
