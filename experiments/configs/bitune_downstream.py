"""The Bitune authors' downstream runs (their `downstream.sh`): fine-tune on one task's training set, then evaluate
on that task. The argument after ':' names the task: gsm8k (their default), arc, csqa, piqa or siqa.

    python -m experiments.prepare_bitune_data gsm8k --source /path/to/gsm8k/main --out data/bitune/gsm8k \\
        --test_source /path/to/gsm8k/main/test-00000-of-00001.parquet
    python -m experiments.run --config=experiments/configs/bitune_downstream.py:gsm8k \\
        --config.model.name=/path/to/Meta-Llama-3-8B
    python -m bitune_jax.eval.gsm8k --run runs/bitune_downstream/gsm8k --data data/bitune/gsm8k/test.jsonl

As in `downstream.sh` with `common_0.sh`: lr 1e-3 (3e-4 is commented out there), 747 updates of 10 examples (one
epoch of GSM8K's 7,473), warmup 747 // 10 = 74, linear schedule, max length 512 (longer examples dropped), the
task's "Question: ...\\n\\nAnswer:" format (experiments/prepare_bitune_data.py writes each task's prompt and answer
strings), Bitune with the LoRA rank-8 adapter sets of `smollm2_bitune`, bf16, seeds 42, 43, 44 (`get_sweep`).
Their default model there is Meta-Llama-3-8B (Gemma-2B/7B, Llama-2-7B and Phi-2 commented out): set
`model.name`. GSM8K is scored by `bitune_jax.eval.gsm8k` (their harness task: greedy, 256 tokens, strict and
flexible extraction); ARC (the Challenge set), CSQA, PIQA and SIQA by `bitune_jax.eval.bitune_mc` through
`python -m bitune_jax.eval.harness` (their `*_full` tasks).
"""

from experiments.configs import smollm2_bitune

TASKS = ("gsm8k", "arc", "csqa", "piqa", "siqa")


def get_config(task: str = "gsm8k"):
    if task not in TASKS:
        raise ValueError(f"unknown downstream task {task!r}; use one of {', '.join(TASKS)}")
    c = smollm2_bitune.get_config()
    c.workdir = f"runs/bitune_downstream/{task}"
    c.model.name = ""  # required: a local Hugging Face directory (their default: meta-llama/Meta-Llama-3-8B)
    c.model.dtype = "bfloat16"
    c.model.attn_impl = "auto"
    c.data.source = "jsonl"
    c.data.train_path = f"data/bitune/{task}/train.jsonl"  # experiments/prepare_bitune_data.py
    c.train.lr = 1e-3
    c.train.max_updates = 747
    c.checkpoint.every_steps = 0  # the final state only, as theirs
    return c


def get_sweep(task: str = "gsm8k"):
    """The LoRA baseline and Bitune at each seed on one task: `python -m experiments.sweep
    experiments/configs/bitune_downstream.py:arc --sweep=arc`."""
    workdir = get_config(task).workdir
    return [{**p, "workdir": f"{workdir}/{p['workdir'].rsplit('/', 1)[1]}"} for p in smollm2_bitune.get_sweep()]
