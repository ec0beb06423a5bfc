"""Repetition SFT as the authors ran it (docs/method.md A): Olmo-3-7B base, 400 samples x 128 epochs.

    python -m experiments.prepare_dolci --source /path/to/Dolci-Think-SFT-7B --tokenizer /path/to/Olmo-3-7B-Instruct \
        --out data/dolci_think
    python -m experiments.run --config=experiments/configs/olmo7b_rep.py:h100x8 \
        --config.model.name=/path/to/Olmo-3-1025-7B \
        --config.data.chat_template=/path/to/olmo3_instruct_template.jinja

The data are the authors' own rows: `prepare_dolci` repeats their `convert_dolci.py` and `split.py` (the same
`datasets` shuffles, seed 42) and writes the split order to `pool.jsonl`, read as it stands (`data.pool_order =
file`): the first 1,000 rows are their validation set, the next `data.num_samples` their `train_{n}`. Each epoch's
example order is theirs (`data.order = authors`: `dataset.shuffle(seed=42 + epoch)` on the previous epoch's order),
and every step's training rows are logged in `metrics.jsonl`. Prompts are rendered with thinking on, as theirs.
Full fine-tune in bf16, updating bf16 parameters directly as the original does (param_dtype bfloat16; set
`--config.model.param_dtype=float32` for a float32 master copy), with float32 AdamW moments and update math
(`train.moments_dtype`; the authors' 8-bit AdamW also dequantizes to float32 for the update). AdamW lr 2e-5, betas
(0.9, 0.999), weight decay 0, clip 1.0, cosine with `T // 10` warmup updates over the whole budget, one unpadded
sequence per update, max length 32,768. The budget grid (51,200 updates) is `get_sweep()`
(`python -m experiments.sweep`). The argument after ':' picks the mesh: h100x8 (8 GPUs) or v5p-<chips> (a TPU v5p
slice). One sequence per update cannot be split by rows, so both split each sequence's tokens over every device
(`mesh.sequence`; parameters and optimizer state are sharded over the same devices, ZeRO-3 style).
`python -m benchmarks.scale_plan` compiles these steps ahead of time and prints their per-device memory and roofline
time. Intended differences from the authors' code are listed in docs/method.md ("Differences").
"""

from experiments.configs.common import base

POOL = 51_200
GRID = [(200 * 2**i, 256 // 2**i) for i in range(9)]  # (samples, epochs): 200x256 ... 51,200x1


def get_config(platform: str = "h100x8"):
    c = base()
    c.workdir = "runs/olmo7b_rep"
    c.objective = "full"
    c.model.name = ""  # required: a local Hugging Face directory of Olmo-3-7B (base)
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "bfloat16"
    c.model.remat = "full"
    c.data.source = "jsonl"
    c.seed = 42  # the authors' train.py default: epoch e is shuffled with seed 42 + e
    c.data.train_path = "data/dolci_think/pool.jsonl"  # python -m experiments.prepare_dolci --out data/dolci_think
    c.data.pool_order = "file"  # pool.jsonl is already in the authors' split order: no reshuffle
    c.data.order = "authors"
    c.data.num_samples = 400
    c.data.val_size = 1_000  # the authors' validation set: the first 1,000 rows of the split order
    c.eval.val_every_epochs = 8  # 1,000 forward passes each time; the authors validate at the end
    c.data.max_len = 32_768
    c.data.truncation = "error"  # the original never truncates; prepare_dolci keeps responses under 10,000 tokens
    c.data.batch_size = 1
    c.data.pad_multiple = 1024
    c.train.epochs = 128
    c.train.lr = 2e-5
    c.train.schedule = "cosine"
    c.train.warmup_frac = 0.1
    c.train.clip = 1.0
    c.train.loss_chunk = 2048  # 32k rows x 100k vocabulary would be 13 GB of float32 logits at once
    c.saturation.mode = "observe"  # the paper trains every epoch; the saturation epoch is logged ("anneal": end there)
    c.checkpoint.every_steps = 2_000
    c.model.attn_impl = "auto"
    if platform == "h100x8":
        c.mesh.sequence = 8  # 4,096 tokens per GPU at 32k
    elif platform.startswith("v5p-"):
        c.mesh.sequence = int(platform.split("-")[1])  # one process per host: jax.distributed finds the slice
        c.distributed.enabled = True
    else:
        raise ValueError(f"unknown platform {platform!r}; use h100x8 or v5p-<chips>")
    return c


# The authors' scripts/train_dolci.sh: for epochs 256, 128, ..., 1, every size 200, 400, ... within the budget.
TRIANGLE = [(n, e) for e in (2**j for j in range(8, -1, -1)) for n in (200 * 2**i for i in range(9)) if n * e <= POOL]


def get_sweep(kind: str = "diagonal"):
    """`diagonal`: the fixed-budget grid, samples x epochs = 51,200 updates (the paper's headline comparison).
    `triangle`: every point at or under the budget, in the authors' order (`python -m experiments.sweep
    experiments/configs/olmo7b_rep.py --sweep=triangle`)."""
    points = {"diagonal": GRID, "triangle": TRIANGLE}
    if kind not in points:
        raise ValueError(f"unknown sweep {kind!r}; choose one of {sorted(points)}")
    return [{"data.num_samples": n, "train.epochs": e, "workdir": f"runs/olmo7b_rep/{n}x{e}"} for n, e in points[kind]]
