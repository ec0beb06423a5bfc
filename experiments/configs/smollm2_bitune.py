"""The Bitune recipe (docs/method.md B) on SmolLM2-135M-Instruct.

LoRA rank 8 with lora_alpha 1 (scale 1/8) on every projection, one adapter set per prompt stream, per-layer mixing
with tau 0.01; AdamW (eps 1e-6, betas 0.9/0.999, no weight decay), lr 3e-4, linear schedule with 10% warmup, clip
1.0, 3,000 updates of 10 examples, max length 512 (longer examples dropped), the paper's plain prompt format
"Question: ...\\n\\nAnswer:". By default it trains on the project's synthetic task (nothing to download); point
`data.source=jsonl` and `data.train_path` at an instruction set (UltraFeedback in the paper) for the real recipe.
"""

from experiments.configs.common import base


def get_config():
    c = base()
    c.workdir = "runs/smollm2_bitune"
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
    c.train.epochs = 1
    c.train.max_updates = 3_000
    c.train.lr = 3e-4
    c.train.schedule = "linear"
    c.train.warmup_frac = 0.1
    c.train.eps = 1e-6
    c.train.clip = 1.0
    c.saturation.enabled = False
    c.checkpoint.every_steps = 500
    return c
