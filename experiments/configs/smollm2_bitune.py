"""The Bitune recipe (docs/method.md B) on SmolLM2-135M-Instruct.

As the authors' `instruct.sh` / `common_0.sh` run it: LoRA rank 8 with lora_alpha 1 (scale 1/8) on every
projection, one adapter set per prompt stream, per-layer mixing with tau 0.01; AdamW (eps 1e-6, betas 0.9/0.999,
no weight decay), lr 3e-4, linear schedule with 10% warmup (`3000 // 10` updates), clip 1.0, 3,000 updates of 10
examples, looping over the data for up to 100 epochs until the update budget is spent, max length 512 (longer
examples dropped), the plain prompt format "Question: ...\\n\\nAnswer:", seeds 42, 43, 44 (`get_sweep`: the LoRA
baseline and Bitune at each). By default it trains on the project's synthetic task (nothing to download); for the
paper's data, `python -m experiments.prepare_bitune_data ultrafeedback --source ... --tokenizer ... --out DIR`
and `--config.data.source=jsonl --config.data.train_path=DIR/train.jsonl`.

Intended differences from the authors' code (docs/method.md, "Differences"): 10 examples are one batch of 10
rows rather than 10 accumulated micro-steps (the same loss), and an update never spans two epochs (the last batch
of an epoch has N mod 10 examples; theirs would take the rest from the next epoch).
"""

from experiments.configs.common import base

SEEDS = (42, 43, 44)  # the authors' common_0.sh


def get_config():
    c = base()
    c.workdir = "runs/smollm2_bitune"
    c.seed = SEEDS[0]
    c.objective = "bitune"
    c.peft.method = "lora"
    c.peft.rank = 8
    c.peft.alpha = 1.0
    c.bitune.tau = 0.01
    c.bitune.w_init = 0.01
    c.data.template = "plain"
    c.data.max_len = 512
    c.data.truncation = "drop"
    c.data.batch_size = 10  # the paper accumulates 10 examples of batch 1; one batch of 10 has the same loss
    c.data.synthetic.pool_size = 30_000
    c.data.num_samples = 0
    c.train.epochs = 100  # the authors' max_epochs: the update budget ends the run first unless the data is tiny
    c.train.max_updates = 3_000
    c.train.lr = 3e-4
    c.train.schedule = "linear"
    c.train.warmup_frac = 0.1
    c.train.eps = 1e-6
    c.train.clip = 1.0
    c.saturation.enabled = False
    c.checkpoint.every_steps = 500
    return c


def get_sweep():
    """The LoRA baseline and Bitune at each of the authors' seeds (`python -m experiments.sweep`)."""
    workdir = get_config().workdir
    arms = {"lora": {"objective": "peft"}, "bitune": {"objective": "bitune"}}
    return [
        {**overrides, "seed": seed, "workdir": f"{workdir}/{arm}_seed{seed}"}
        for arm, overrides in arms.items()
        for seed in SEEDS
    ]
