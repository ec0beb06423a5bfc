"""Bitune study v3, step 0 (docs/bitune_study_v3/PREREGISTRATION.md): which model the study uses.

    python -m experiments.bitune_v3_model_choice [--out=docs/bitune_study_v3] [--items=200]

For SmolLM2-135M-Instruct and Gemma 3 270M (the shipped GGUF presets), the untrained loss at update 0 of LoRA (fresh
adapters: B = 0, the base model's loss) and of Bitune (the paper's init: two fresh adapter sets, alpha = 0.5
mixing) on the first `--items` training problems of the study's task (two-hop lookups, reverse order, K = 6, data
seed 0; v2's pool), each example rendered as the trainer renders it (`data.template="plain"`, BOS as the model's
tokenizer adds it: none for SmolLM2, one for Gemma 3), the loss as the trainer computes it (the mean over examples of
each answer's mean token loss), float32, no dropout.

The rule, written before the measurement: the model whose Bitune start is closer to its LoRA start is used; on a tie
(the two gaps within 10% of LoRA's loss of each other) Gemma 3, the authors' family. Writes
`OUT/model_choice.json` (the losses and the choice) and `OUT/model_choice.md`.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import numpy as np
from absl import app, flags

import bitune_jax as bj
from bitune_jax.data import tokenize_records
from bitune_jax.data.pipeline import collate, round_up
from bitune_jax.tasks import two_hop
from bitune_jax.train.objectives import Objective
from bitune_jax.train.validate import validate
from experiments.configs import smollm2_bitune

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
DATA_SEED, TRAIN_ITEMS, TEST_ITEMS, NUM_FACTS, ORDER = 0, 4_000, 500, 6, "reverse"  # v2's pool and test set
TIE = 0.10  # gaps within this fraction of LoRA's loss of each other: a tie, Gemma 3 (the authors' family) wins
BATCH = 10  # rows per forward (the paper's batch); the loss is averaged over examples, so it does not matter

flags.DEFINE_string("out", "docs/bitune_study_v3", "where model_choice.{json,md} go")
flags.DEFINE_integer("items", 200, "the first this many training problems")
FLAGS = flags.FLAGS


def _loss(objective: Objective, trainable, frozen, batch) -> jax.Array:
    return objective.loss(trainable, frozen, batch)[0]


def start_losses(model: str, records: list) -> dict[str, float]:
    """Mean loss at update 0 of LoRA and Bitune (the study's recipe: `smollm2_bitune.py`'s adapter settings)."""
    config = smollm2_bitune.get_config()
    config.model.name = model
    lm = bj.load(model)
    examples, report = tokenize_records(records, lm.tokenizer, max_len=config.data.max_len, template="plain")
    if len(examples) != len(records):
        raise ValueError(f"{model}: {report.summary()}; every problem should fit")
    losses: dict[str, float] = {"bos": float(int(examples[0].prompt_ids[0]) == lm.tokenizer.bos_id)}
    for arm, kind in (("lora", "peft"), ("bitune", "bitune")):
        config.objective = kind
        spec = validate(config, jax.device_count())
        objective = Objective.from_spec(spec, lm.cfg)
        trainable, frozen = objective.split(lm.params, jax.random.key(spec.seed))
        loss_fn = jax.jit(functools.partial(_loss, objective))
        per_batch = []
        for start in range(0, len(examples), BATCH):
            ids = np.arange(start, min(start + BATCH, len(examples)))
            width = round_up(max(examples[i].length for i in ids), 8)
            batch = collate(examples, ids, width, lm.pad_id)
            per_batch.append((float(loss_fn(trainable, frozen, batch)), len(ids)))
        losses[arm] = sum(loss * n for loss, n in per_batch) / len(examples)
    return losses


def choose(results: dict[str, dict[str, float]]) -> tuple[str, str]:
    """The rule of the pre-registration: `(model, reason)`."""
    gaps = {m: r["bitune"] - r["lora"] for m, r in results.items()}
    smol, gemma = MODELS
    rel = {m: gaps[m] / results[m]["lora"] for m in MODELS}
    if abs(rel[smol] - rel[gemma]) <= TIE:
        return gemma, (
            f"a tie: Bitune starts {rel[smol]:+.1%} (SmolLM2) and {rel[gemma]:+.1%} (Gemma 3) from LoRA's loss, within "
            f"{TIE:.0%} of each other, so Gemma 3, the authors' family"
        )
    best = min(MODELS, key=lambda m: abs(rel[m]))
    return best, (
        f"Bitune's start is closer to LoRA's on {best}: {rel[smol]:+.1%} of LoRA's loss on SmolLM2, {rel[gemma]:+.1%} "
        "on Gemma 3"
    )


def main(argv) -> None:
    del argv
    train, _ = two_hop.train_test_split(TRAIN_ITEMS, TEST_ITEMS, seed=DATA_SEED, order=ORDER, num_facts=NUM_FACTS)
    records = train[: FLAGS.items]
    results = {}
    for model in MODELS:
        results[model] = start_losses(model, records)
        print(f"{model}: {results[model]}", flush=True)
    model, reason = choose(results)
    out = pathlib.Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    command = f"python -m experiments.bitune_v3_model_choice --out={FLAGS.out} --items={FLAGS.items}"
    record = {"command": command, "items": len(records), "losses": results, "model": model, "reason": reason}
    (out / "model_choice.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = "\n".join(
        f"| {m} | {'yes' if r['bos'] else 'no'} | {r['lora']:.3f} | {r['bitune']:.3f} | "
        f"{r['bitune'] - r['lora']:+.3f} ({(r['bitune'] - r['lora']) / r['lora']:+.1%}) |"
        for m, r in results.items()
    )
    (out / "model_choice.md").write_text(
        "# Bitune study v3, step 0: the model\n\n"
        f"Measured with `{command}`: the untrained loss at update 0 on the first {len(records)} training problems "
        "(two-hop, reverse order, K = 6), float32, no dropout.\n\n"
        "| model | BOS | LoRA (= base) | Bitune (alpha 0.5) | Bitune - LoRA |\n| --- | --- | --- | --- | --- |\n"
        f"{rows}\n\n**Chosen: {model}**: {reason}.\n"
    )
    print(f"model: {model}\nreason: {reason}")


if __name__ == "__main__":
    app.run(main)
