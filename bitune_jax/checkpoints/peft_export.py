"""LoRA adapters as a Hugging Face `peft` adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
that `peft.PeftModel.from_pretrained(base, directory)` loads onto the exported base (`LM.save_hf`).

Our adapters hold, per target kernel `layers/<name>` with the kernel `[layers, in, out]`, `lora_a [layers, in, r]`
and `lora_b [layers, r, out]` with scale `alpha / r`; peft's `lora_A.weight` is `[r, in]` and `lora_B.weight`
`[out, r]` with scaling `lora_alpha / r`: the same map once transposed. DoRA and IA3 are not exported (peft's
layouts for them differ and are not checked here): merge them into the base (`bitune_jax.peft.merge`) instead.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import safetensors.numpy

from bitune_jax.checkpoints.hf import layer_names
from bitune_jax.models.config import ModelConfig
from bitune_jax.peft import PeftConfig


def save_peft_adapter(
    directory: str | pathlib.Path, adapters: dict, peft: PeftConfig, cfg: ModelConfig, base_model: str = ""
) -> pathlib.Path:
    if peft.method != "lora":
        raise ValueError(f"peft export writes LoRA adapters; method {peft.method!r}: merge it into the base instead")
    if set(adapters) != {"layers"}:
        raise ValueError(f"LoRA export expects adapters on layer kernels only, got top-level keys {sorted(adapters)}")
    names = layer_names(cfg)
    tensors, modules = {}, []
    for name, entry in sorted(adapters["layers"].items()):
        module = names[name].removesuffix(".weight")  # e.g. self_attn.q_proj
        modules.append(module.rsplit(".", 1)[-1])
        a, b = np.asarray(entry["lora_a"], np.float32), np.asarray(entry["lora_b"], np.float32)
        for i in range(cfg.num_layers):
            prefix = f"base_model.model.model.layers.{i}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a[i].T)  # [r, in]
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b[i].T)  # [out, r]
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, directory / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": peft.rank,
        "lora_alpha": peft.alpha,
        "lora_dropout": peft.dropout,
        "target_modules": sorted(set(modules)),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "use_rslora": False,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return directory
