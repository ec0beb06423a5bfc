"""MFU denominators from the datasheet table (measured only for unknown devices) and step FLOPs per objective."""

import numpy as np

from bitune_jax.train.accelerators import datasheet_peak, peak_flops
from bitune_jax.train.performance import model_flops_per_token, step_model_flops


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


def test_step_flops_count_real_tokens_and_bitunes_second_stream():
    batch = {
        "tokens": np.zeros((3, 64), np.int32),
        "length": np.array([40, 64, 0]),
        "prompt_len": np.array([10, 20, 0]),
    }  # the last row is filler
    n, layers, dim = 1000, 2, 16
    full = step_model_flops("full", batch, 32, n, layers, dim)
    assert full == 104 * model_flops_per_token(n, 64, layers, dim, True)
    peft = step_model_flops("peft", batch, 32, n, layers, dim)
    assert peft == 104 * model_flops_per_token(n, 64, layers, dim, False)
    bitune = step_model_flops("bitune", batch, 32, n, layers, dim)
    assert bitune == peft + (9 + 19) * model_flops_per_token(n, 32, layers, dim, False)
