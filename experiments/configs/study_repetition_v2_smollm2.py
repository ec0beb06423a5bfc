"""Repetition study v2 (docs/method.md A): list-state tracking traces on a single-step-warmed SmolLM2, 2 CPU cores.

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_v2_smollm2.py \\
        --out=docs/repetition_study_v2

The paper's claim is about shaping reasoning behaviour in a model that already has the step-level skill, so the
model here is SmolLM2-135M-Instruct after the single-step warm-up (`experiments/list_edits_warmup.py`, exported to
`WARMUP/model`; it does 99.5% of held-out single edits, but answers a whole problem with a bare list and no trace:
0 of 32 traces zero-shot). The study command builds the warm-up first when `WARMUP/model` is missing.

Every grid point is the repetition recipe (`smollm2_rep.py`: full fine-tune, AdamW, cosine with 10% warmup over the
whole budget, clip 1.0, one sequence per update) with the same number of updates, spent as samples x epochs. Samples
are nested prefixes of one shuffled pool of `list_edits` problems (5-8 edits, two families, 3-4 phrasings per edit
in the question, 6 step styles and occasional remarks in the trace), as in the paper. Every epoch is trained (the
paper's runs do not stop early); the saturation rule is replayed on the logged token accuracy afterwards. Held-out
accuracy is greedy exact match of the last `\\boxed{}` list on 256 test problems that share no problem text with
the pool, once at the end of each run.

Why these sizes (measured on the 2 CPU cores this was built on): a trace example is ~310 tokens (prompt ~130 with
SmolLM2's default system prompt, response mean 181, max 278) and full fine-tuning runs at ~150 tokens/s, so a
128-update point trains in ~5 minutes and its greedy eval on 256 problems takes about as long. A first try with
8-12 edits and 256 updates took ~14 minutes to train and over 12 to evaluate per point, too long for 9 points.
"""

from experiments.configs import smollm2_rep

WARMUP = "runs/list_edits_warmup"  # experiments.list_edits_warmup --out; its export is WARMUP/model
BUDGET = 128  # updates per fixed-budget point
DIAGONAL = [(128, 1), (32, 4), (16, 8), (8, 16)]  # (samples, epochs), samples x epochs = BUDGET
FIXED_N = [(16, 1), (16, 2), (16, 4), (16, 16)]  # with (16, 8) from the diagonal; 16 x 16 is past saturation
LR = 1e-4  # picked on the one-epoch point from LR_CHOICES (get_lr_sweep)
LR_CHOICES = (3e-5, 1e-4, 3e-4)


def get_config():
    c = smollm2_rep.get_config()
    c.workdir = "runs/study_repetition_v2"
    c.model.name = f"{WARMUP}/model"
    c.data.synthetic.task = "list_edits"
    c.data.synthetic.pool_size = BUDGET
    c.data.synthetic.test_size = 256
    c.data.synthetic.min_steps = 5
    c.data.synthetic.max_steps = 8
    c.data.max_len = 448  # the longest pool example is 413 tokens (test: 430, with a 278-token answer)
    c.data.pad_multiple = 64  # a few padded shapes, each compiled once
    c.train.lr = LR
    c.saturation.enabled = False  # replayed afterwards, on both token-accuracy aggregations
    c.saturation.metric = "token_accuracy"  # as recorded: the default before it became sample_token_accuracy
    c.checkpoint.every_steps = 0  # only the final state; a study point is rerun whole if interrupted
    c.eval.at_start = False
    c.eval.num_items = 256
    c.eval.batch_size = 128
    c.eval.max_new_tokens = 320  # test responses are at most 278 tokens; the rest measures non-termination
    return c


def point(samples: int, epochs: int, lr: float = LR) -> dict:
    name = f"{samples}x{epochs}_lr{lr:g}"  # the learning-rate pick and the grid share the one-epoch point
    return {
        "data.num_samples": samples,
        "train.epochs": epochs,
        "train.max_updates": samples * epochs,
        "train.lr": lr,
        "eval.every_epochs": epochs,  # once, after the last epoch
        "workdir": f"runs/study_repetition_v2/{name}",
    }


def get_sweep():
    """The fixed-budget diagonal, then the fixed-n row (16 samples, 1/2/4/16 epochs; 8 is on the diagonal: the rule
    fires in its epoch 7, so 16 x 16 is the longer point that judges it)."""
    return [point(n, e) for n, e in DIAGONAL] + [point(n, e) for n, e in FIXED_N]


def get_lr_sweep():
    """The learning-rate pick: the one-epoch point at each rate; the study uses `LR` for every point."""
    return [point(BUDGET, 1, lr) for lr in LR_CHOICES]
