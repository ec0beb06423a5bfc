"""The train step a user would otherwise run: transformers (+ peft for LoRA) in PyTorch, float32, on the same
weights, batches, optimizer (AdamW, betas 0.9/0.999, eps 1e-8, no weight decay) and gradient clipping (1.0) as the
project's step, torch threads = cores."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import peft
import torch
import transformers

import bitune_jax as bj
from bitune_jax.data.batch import SFTBatch

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # = ALL_PROJECTIONS


def peer_model(lm: bj.LM, kind: str, rank: int = 8) -> torch.nn.Module:
    """`lm`'s weights in transformers, training mode: every weight trains (`full`) or LoRA r`rank`, alpha 2r, on
    the same seven projections as the project's `PeftConfig(rank)` (`peft`)."""
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        lm.save_hf(tmp)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    if kind == "peft":
        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=PROJECTIONS)
        model = peft.get_peft_model(model, config)
    elif kind != "full":
        raise ValueError(f"peer kind {kind!r}: expected 'full' or 'peft'")
    model.train()
    return model


def peer_inputs(batch: SFTBatch) -> dict:
    """A padded `SFTBatch` as transformers' keyword arguments: attention mask over the padding, labels -100 on the
    prompt and the padding (the project's answer-only loss)."""
    tokens = torch.tensor(np.asarray(batch.tokens), dtype=torch.long)
    t = torch.arange(tokens.shape[1])[None]
    length = torch.tensor(np.asarray(batch.length), dtype=torch.long)[:, None]
    prompt_len = torch.tensor(np.asarray(batch.prompt_len), dtype=torch.long)[:, None]
    mask = t < length
    labels = torch.where(mask & (t >= prompt_len), tokens, -100)
    return dict(input_ids=tokens, attention_mask=mask.long(), labels=labels, use_cache=False)


def peer_steps(model: torch.nn.Module, batches: Sequence[SFTBatch], lr: float = 1e-5) -> Callable[[], None]:
    """A function that runs one optimizer step per batch (forward, backward, clip, AdamW, zero grads)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    inputs = [peer_inputs(b) for b in batches]

    def run() -> None:
        for x in inputs:
            model(**x).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run
