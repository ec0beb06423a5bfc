"""The single-step warm-up pilot for the list-edits repetition study: train on single steps, then gate on held-out ones.

    python -m experiments.list_edits_warmup [--train_items 1800] [--eval_items 200] [--out runs/list_edits_warmup] \\
        [--config=experiments/configs/list_edits_warmup_smollm2.py] [--config.train.lr=...]

The study needs SmolLM2-135M-Instruct to do >= 90% of single list edits right (one edit on one list) before SFT
on the long traces (`bitune_jax.tasks.list_edits`); untrained it does 1% (`experiments/list_edits_pilot.py`). This
script:
  1. draws `--train_items` single steps (`list_edits.single_step_items`, seed `--train_seed`) and `--eval_items`
     held-out ones (seed `--eval_seed`; the default 0 is the pilot's own 200 items), drops any training item whose
     prompt is a held-out prompt, asserts the two sets disjoint and writes the training items to
     `OUT/train.jsonl` as chat rows (the zero-shot prompt as the user turn, the bracketed list after the edit as
     the assistant turn);
  2. scores the held-out items with the untrained model (greedy, zero-shot,
     `tasks.list_edits_scoring.score_single_steps`);
  3. trains with the project's trainer (`bitune_jax.train.loop.run`, the config's `workdir` set to `OUT/run`);
  4. loads the run's final checkpoint onto the model (`bitune_jax.train.restore.restore_run(...).merged()`: full
     weights replace the base's, PEFT adapters are merged), scores the same held-out items again and exports it to
     `OUT/model` (a Hugging Face directory: the repetition study's `model.name`).
It prints the per-op / per-family table (before and after) and the headline figures last, one `name: value` per
line, and writes them with the breakdown to `OUT/results.json` and every held-out generation to
`OUT/held_out_generations.jsonl`. Rerunning the same command resumes (or just reloads) the same run; use a new
`--out` for a new setting (a changed training file or config is refused by the trainer's resume check).
"""

from __future__ import annotations

import collections
import json
import pathlib
import time
from typing import Any

import numpy as np

from bitune_jax.tasks import list_edits
from bitune_jax.tasks.list_edits_scoring import print_accuracy_table, score_single_steps

DEFAULT_CONFIG = "experiments/configs/list_edits_warmup_smollm2.py"
GATE = 0.90  # the study's pilot gate on held-out single-step accuracy


def make_items(n_train: int, n_eval: int, *, train_seed: int, eval_seed: int) -> tuple[list, list, int]:
    """`(training items, held-out items, dropped)`: the held-out set is exactly `single_step_items(n_eval,
    seed=eval_seed)`; the training set is the first `n_train` items of seed `train_seed` whose prompt is not a
    held-out prompt (`dropped` of them were skipped). Raises if the seeds are equal or the sets share a prompt."""
    if train_seed == eval_seed:
        raise ValueError(f"the training and held-out seeds must differ, both are {train_seed}")
    held_out = list_edits.single_step_items(n_eval, seed=eval_seed)
    held_prompts = {it["prompt"] for it in held_out}
    extra = 16
    while True:  # collisions are rare (short lists, few phrasings); draw a little more until n_train are left
        train, dropped = [], 0
        for it in list_edits.single_step_items(n_train + extra, seed=train_seed):
            if len(train) == n_train:
                break
            if it["prompt"] in held_prompts:
                dropped += 1
            else:
                train.append(it)
        if len(train) == n_train:
            break
        extra *= 2
    overlap = {it["prompt"] for it in train} & held_prompts
    assert not overlap, f"{len(overlap)} held-out prompts are in the training items, e.g. {sorted(overlap)[0]!r}"
    return train, held_out, dropped


def training_row(item: dict) -> dict[str, Any]:
    """One JSONL row in the training format: the zero-shot prompt, then the gold list as the answer to learn."""
    return {
        "messages": [{"role": "user", "content": item["prompt"]}, {"role": "assistant", "content": item["gold"]}],
        "family": item["family"],
        "op": item["op"],
    }


def write_training_jsonl(items: list[dict], path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(training_row(it), ensure_ascii=False) + "\n" for it in items)
    if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged bytes keep a resume valid
        path.write_text(text, encoding="utf-8")
    return path


def groups(items: list[dict]) -> dict[str, list[int]]:
    """Row indices per reported group: all, each op, each family, each family/op pair (the pilot's table rows)."""
    out: dict[str, list[int]] = {"all": list(range(len(items)))}
    for op in list_edits.OPS:
        out[f"op={op}"] = [i for i, it in enumerate(items) if it["op"] == op]
    for f in list_edits.FAMILIES:
        out[f"family={f}"] = [i for i, it in enumerate(items) if it["family"] == f]
    for f in list_edits.FAMILIES:
        for op in list_edits.OPS:
            out[f"{f}/{op}"] = [i for i, it in enumerate(items) if it["family"] == f and it["op"] == op]
    return out


def accuracies(items: list[dict], verdicts: list[str]) -> dict[str, float | None]:
    return {
        name: (float(np.mean([verdicts[i] == "correct" for i in rows])) if rows else None)
        for name, rows in groups(items).items()
    }


def score(lm, items: list[dict], *, batch: int, new_tokens: int) -> dict[str, Any]:
    """Greedy zero-shot single-step outputs and verdicts (`tasks.list_edits_scoring.score_single_steps`), timed."""
    t = time.perf_counter()
    texts, verdicts, lenient, prompt_len = score_single_steps(
        lm, items, [], shots=0, seed=0, batch=batch, new=new_tokens
    )
    return {
        "texts": texts,
        "verdicts": verdicts,
        "any_list": lenient,
        "prompt_tokens_mean": prompt_len,
        "seconds": time.perf_counter() - t,
        "by_group": accuracies(items, verdicts),
        "errors": dict(collections.Counter(verdicts)),
    }


def trained_lm(workdir: str | pathlib.Path):
    """The run's final checkpoint on its model as a plain `LM` (PEFT merged; a Bitune run has none), in float32
    with XLA attention."""
    from bitune_jax.train.restore import restore_run

    return restore_run(workdir, dtype="float32", attn_impl="xla").merged()


def step_throughput(workdir: pathlib.Path) -> float | None:
    """Median of the trainer's logged tokens/s (a sliding window over recent steps) in the run's second half."""
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rates = [r["tokens_per_s"] for r in rows if r.get("scope") == "step" and r.get("tokens_per_s")]
    return float(np.median(rates[len(rates) // 2 :])) if rates else None


def export_warmed(lm, workdir: str | pathlib.Path, directory: str | pathlib.Path) -> pathlib.Path:
    """The trained model as a Hugging Face directory with its run's recipe beside it (`run_record.RECIPE_NAME`):
    a study's records name the warmed model by how it was made, so a warm-up retrained on another machine, equal
    but for low bits, does not invalidate them."""
    from bitune_jax.train import run_record

    exported = lm.save_hf(directory)
    recipe = json.dumps(run_record.recipe(workdir), indent=1, sort_keys=True)
    (exported / run_record.RECIPE_NAME).write_text(recipe + "\n")
    return exported


def warm_up(
    config=None,
    *,
    out: str | pathlib.Path = "runs/list_edits_warmup",
    n_train: int = 1800,
    n_eval: int = 200,
    train_seed: int = 1,
    eval_seed: int = 0,
    batch: int = 16,
    new_tokens: int = 32,
) -> dict[str, Any]:
    """Train on single steps, score held-out ones before and after, export the model to `OUT/model` (a Hugging
    Face directory the study configs load) and write `OUT/results.json`; returns the results.

    config: the run config (a `ConfigDict`); None loads `DEFAULT_CONFIG`.
    """
    from absl import logging

    import bitune_jax as bj
    from bitune_jax.train.loop import run
    from experiments.configs import list_edits_warmup_smollm2

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    config = list_edits_warmup_smollm2.get_config() if config is None else config
    out = pathlib.Path(out)
    t_start = time.perf_counter()

    train_items, held_out, dropped = make_items(n_train, n_eval, train_seed=train_seed, eval_seed=eval_seed)
    path = write_training_jsonl(train_items, out / "train.jsonl")
    print(f"{len(train_items)} training items (seed {train_seed}, {dropped} dropped as held-out prompts) -> {path}")
    print(f"{len(held_out)} held-out items (seed {eval_seed}), disjoint in prompt text")
    with config.unlocked():
        config.data.train_path = str(path)
        config.workdir = str(out / "run")

    base = bj.load(config.model.name, dtype=config.model.dtype, attn_impl=config.model.attn_impl)
    before = score(base, held_out, batch=batch, new_tokens=new_tokens)
    print(f"before: {before['by_group']['all']:.3f} in {before['seconds']:.0f} s")
    del base

    t = time.perf_counter()
    summary = run(config)
    train_s = time.perf_counter() - t
    workdir = pathlib.Path(config.workdir)

    lm = trained_lm(workdir)
    after = score(lm, held_out, batch=batch, new_tokens=new_tokens)
    print(f"after: {after['by_group']['all']:.3f} in {after['seconds']:.0f} s")
    exported = export_warmed(lm, workdir, out / "model")
    print(f"warmed model -> {exported}")

    print_accuracy_table(held_out, {"before": before["verdicts"], "after": after["verdicts"]})
    wrong = [i for i, v in enumerate(after["verdicts"]) if v != "correct"]
    for i in wrong[:6]:
        it = held_out[i]
        print(f"  [{after['verdicts'][i]}] {it['edit']!r} on [{list_edits.format_list(it['words'])}]")
        print(f"    gold {it['gold']!r}\n    got  {after['texts'][i]!r}")
    with open(out / "held_out_generations.jsonl", "w", encoding="utf-8") as f:
        for i, it in enumerate(held_out):
            row = {k: it[k] for k in ("family", "op", "edit", "prompt", "gold")}
            row.update(before=before["texts"][i], before_verdict=before["verdicts"][i])
            row.update(after=after["texts"][i], after_verdict=after["verdicts"][i])
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    acc_after = after["by_group"]["all"]
    headline: dict[str, Any] = {
        "warmup_train_items": len(train_items),
        "warmup_eval_items": len(held_out),
        "warmup_objective": config.objective,
        "warmup_lr": config.train.lr,
        "warmup_epochs": summary["epochs"],
        "warmup_updates": summary["updates"],
        "warmup_minutes": round(train_s / 60, 2),
        "warmup_tokens_per_s": step_throughput(workdir),
        "warmup_final_token_accuracy": summary["final_token_accuracy"],
        "eval_minutes": round((before["seconds"] + after["seconds"]) / 60, 2),
        "single_step_acc_before": before["by_group"]["all"],
        "single_step_acc_after": acc_after,
        "single_step_acc_after_any_list": after["any_list"],
    }
    for op in list_edits.OPS:
        headline[f"single_step_acc_after_{op}"] = after["by_group"][f"op={op}"]
    for fam in list_edits.FAMILIES:
        headline[f"single_step_acc_after_{fam}"] = after["by_group"][f"family={fam}"]
    headline["gate_met"] = bool(acc_after >= GATE)
    headline["total_minutes"] = round((time.perf_counter() - t_start) / 60, 2)
    results = {
        "headline": headline,
        "gate": GATE,
        "train_seed": train_seed,
        "eval_seed": eval_seed,
        "dropped_overlaps": dropped,
        "before": {k: v for k, v in before.items() if k not in ("texts", "verdicts")},
        "after": {k: v for k, v in after.items() if k not in ("texts", "verdicts")},
        "run_summary": {k: v for k, v in summary.items() if k != "history"},
        "run_history": summary["history"],
        "config": config.to_dict(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def main(argv) -> None:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    results = warm_up(
        f.config,
        out=f.out,
        n_train=f.train_items,
        n_eval=f.eval_items,
        train_seed=f.train_seed,
        eval_seed=f.eval_seed,
        batch=f.batch,
        new_tokens=f.new_tokens,
    )
    for name, value in results["headline"].items():
        print(f"{name}: {f'{value:.4g}' if isinstance(value, float) else value}")


def _define_flags() -> None:
    """Flags are defined only when run as a script, so importing the helpers (tests) adds none to absl's registry."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "the warm-up run's config file", lock_config=True)
    flags.DEFINE_integer("train_items", 1800, "single-step training items (a multiple of 10 balances ops)")
    flags.DEFINE_integer("eval_items", 200, "held-out single-step items")
    flags.DEFINE_integer("train_seed", 1, "seed of the training items")
    flags.DEFINE_integer("eval_seed", 0, "seed of the held-out items (0: the pilot's own items)")
    flags.DEFINE_string("out", "runs/list_edits_warmup", "training file, run workdir and results go here")
    flags.DEFINE_integer("batch", 16, "prompts per generate call when scoring")
    flags.DEFINE_integer("new_tokens", 32, "generation budget for a single-step answer (the longest gold is 20)")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
