"""Repetition study v2 (docs/method.md A): list-state tracking traces on a single-step-warmed SmolLM2, 2 CPU cores.

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_v2_smollm2.py \\
        --out=docs/repetition_study_v2

The paper's claim is about shaping reasoning behaviour in a model that already has the step-level skill, so the
model here is SmolLM2-135M-Instruct after the single-step warm-up (`experiments/list_edits_warmup.py`, exported to
`WARMUP/model`; it does 99.5% of held-out single edits, but answers a whole problem with a bare list and no trace:
0 of 32 traces zero-shot). The study command builds the warm-up first when `WARMUP/model` is missing.

Every grid point is the repetition recipe (`smollm2_rep.py`: full fine-tune, AdamW, cosine with 10% warmup over the
whole budget, clip 1.0, one sequence per update) with the same number of updates, spent as samples x epochs. Samples
are nested prefixes of one shuffled pool of `list_edits` problems (8-12 edits, two families, 3-4 phrasings per edit),
as in the paper. Every epoch is trained (the paper's runs do not stop early); the saturation rule is replayed on the
logged token accuracy afterwards. Held-out accuracy is greedy exact match of the last `\\boxed{}` list on 256 test
problems that share no problem text with the pool, once at the end of each run.

Why these sizes: a trace example is ~400 tokens (prompt 157 with SmolLM2's default system prompt, response mean 250,
max 360), and full fine-tuning runs at 110-180 tokens/s on 2 cores, so a 256-update point is ~12 minutes of training.
"""

from experiments.configs import smollm2_rep

WARMUP = "runs/list_edits_warmup"  # experiments.list_edits_warmup --out; its export is WARMUP/model
BUDGET = 256  # updates per fixed-budget point
DIAGONAL = [(256, 1), (64, 4), (32, 8), (16, 16)]  # (samples, epochs), samples x epochs = BUDGET
FIXED_N = [(32, 1), (32, 2), (32, 4)]  # with (32, 8) from the diagonal: one sample count, more epochs
LR = 1e-4


def get_config():
    c = smollm2_rep.get_config()
    c.workdir = "runs/study_repetition_v2"
    c.model.name = f"{WARMUP}/model"
    c.data.synthetic.task = "list_edits"
    c.data.synthetic.pool_size = 256
    c.data.synthetic.test_size = 256
    c.data.synthetic.min_steps = 8
    c.data.synthetic.max_steps = 12
    c.data.max_len = 576  # the longest pool example is 556 tokens (test: 584 with a 372-token answer)
    c.data.pad_multiple = 64  # a few padded shapes, each compiled once
    c.train.lr = LR
    c.saturation.enabled = False  # replayed afterwards, on both token-accuracy aggregations
    c.checkpoint.every_steps = 0  # only the final state; a study point is rerun whole if interrupted
    c.eval.at_start = False
    c.eval.num_items = 256
    c.eval.batch_size = 64
    c.eval.max_new_tokens = 448  # test responses are at most ~360 tokens; the rest measures non-termination
    return c


def point(samples: int, epochs: int, lr: float = LR) -> dict:
    name = f"{samples}x{epochs}" + ("" if lr == LR else f"_lr{lr:g}")
    return {
        "data.num_samples": samples,
        "train.epochs": epochs,
        "train.max_updates": samples * epochs,
        "train.lr": lr,
        "eval.every_epochs": epochs,  # once, after the last epoch
        "workdir": f"runs/study_repetition_v2/{name}",
    }


def get_sweep():
    """The fixed-budget diagonal, then the fixed-n row (32 samples, 1/2/4 epochs; 8 is on the diagonal)."""
    return [point(n, e) for n, e in DIAGONAL] + [point(n, e) for n, e in FIXED_N]


def get_lr_sweep():
    """The learning-rate pick: the one-epoch point at each rate; the study uses `LR` for every point."""
    return [point(256, 1, lr) for lr in (3e-5, 1e-4, 3e-4)]
