"""Repetition study v3 (docs/repetition_study_v3/PREREGISTRATION.md): under a fixed update budget, do many epochs
over few list-edit traces beat one epoch over many, and does the saturation rule pick a point that does?

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_v3_smollm2.py \\
        --out=docs/repetition_study_v3    # the rate pick (6 points on draw 0), the pilot gate, then the grid

Model: SmolLM2-135M-Instruct after v2's single-step warm-up (`WARMUP/model`, built by the study command when
missing). Task: list edits, 3-5 edits per problem for the rate pick, then as many as the pilot gate needs (6-9 since
2026-12-07), so that one epoch lands off the floor and off the ceiling. The gate (the 512 x 1 point at the chosen
rate: held-out avg@4 in [0.2, 0.6] with epoch token accuracy below the saturation rule's 0.99; <= 0.9 until
2026-12-07) is judged before the grid runs (`get_pilot`: its try at each difficulty of `EDITS`); a change of
difficulty is appended to `EDITS` and recorded in the pre-registration's "Changes"; the grid runs at the last.

Grid at 512 updates of one sequence each: 512 x 1, 128 x 4, 64 x 8, 32 x 16 (samples x epochs), and 32 x 4, 32 x 8
for the saturation row; every point on two pools (`data.pool_seed` 0 and 1: two shuffles of the 512-problem pool,
so the samples of a point are nested prefixes of its draw). v2's repetition recipe (full fine-tune, AdamW, cosine
with 10% warmup over each run's budget, clip 1.0, float32); every epoch is trained, the saturation rule observes.

Learning rate: one for every point, chosen from `LR_CHOICES` on the mean held-out avg@4 of the 512 x 1 and 32 x 16
points of draw 0 (`get_lr_sweep`). `LR` stays None until the pick is recorded; until then the grid has no points.

Held-out eval: 128 problems that share no text with the pool, the same for every point, sampled as the paper does
(temperature 0.6, top-p 0.95, n = 4, up to 320 new tokens): avg@4 (the primary metric) and pass@4, termination,
steps right before the first error.
"""

from experiments.configs import study_repetition_v2_smollm2 as v2

WARMUP = v2.WARMUP
BUDGET = 512  # updates per fixed-budget point
DIAGONAL = [(512, 1), (128, 4), (64, 8), (32, 16)]  # (samples, epochs), samples x epochs = BUDGET
SATURATION_ROW = [(32, 4), (32, 8)]  # with 32 x 16 from the diagonal: the rule replayed on 32 samples
DRAWS = (0, 1)  # data.pool_seed of the two pools
LR_CHOICES = (3e-5, 1e-4, 3e-4)
# The pick, recorded before the grid runs (PREREGISTRATION.md, "Changes", 2026-12-07): mean avg@4 0.494 at 1e-4
# against 0.326 at 3e-5 and 0.430 at 3e-4.
LR: float | None = 1e-4
# The pilot's difficulties, in order (fewest, most edits per problem): the first is the rate pick's, each later one a
# change of the gate's lever recorded in PREREGISTRATION.md "Changes"; the grid runs at the last.
# 3-5: the gate fails at 1e-4 (avg@4 0.828 > 0.6); 5-8 fails too (0.654); 6-9 from 2026-12-07 (PREREGISTRATION.md,
# Changes).
EDITS: list[tuple[int, int]] = [(3, 5), (5, 8), (6, 9)]
# A difficulty whose longest pool example passes the config's 448 tokens trains with a longer `data.max_len`, and an
# example that still does not fit is an error, not a dropped update: every point keeps its 512 updates. The longest
# at 6-9 is 484 tokens (5-8: 437; the recorded 3-5 and 5-8 points keep the config's settings).
LONGER = {(6, 9): {"data.max_len": 512, "data.truncation": "error"}}


def get_config():
    c = v2.get_config()
    c.workdir = "runs/study_repetition_v3"
    c.data.synthetic.pool_size = BUDGET
    c.data.synthetic.test_size = 128
    c.data.synthetic.min_steps, c.data.synthetic.max_steps = EDITS[0]
    c.eval.num_items = 128
    c.eval.n = 4
    c.eval.temperature = 0.6
    c.eval.top_p = 0.95
    c.eval.max_new_tokens = 320
    c.eval.batch_size = 32  # decode slots: 8 questions x 4 samples at once
    return c


def point(samples: int, epochs: int, lr: float, draw: int, edits: tuple[int, int] | None = None) -> dict:
    """One run's overrides; a difficulty other than the first names its workdir (`_edits5-8`), so the points of
    every difficulty keep their own records."""
    edits = tuple(edits or EDITS[0])
    suffix = "" if edits == tuple(EDITS[0]) else f"_edits{edits[0]}-{edits[1]}"
    return {
        **LONGER.get(edits, {}),
        "data.num_samples": samples,
        "data.synthetic.min_steps": edits[0],
        "data.synthetic.max_steps": edits[1],
        "data.pool_seed": draw,
        "train.epochs": epochs,
        "train.max_updates": samples * epochs,
        "train.lr": lr,
        "eval.every_epochs": epochs,  # once, after the last epoch
        "workdir": f"runs/study_repetition_v3/{samples}x{epochs}_lr{lr:g}_draw{draw}{suffix}",
    }


def get_lr_sweep():
    """The learning-rate pick: 512 x 1 and 32 x 16 of draw 0 at each rate (the grid reuses the chosen rate's)."""
    return [point(n, e, lr, DRAWS[0]) for lr in LR_CHOICES for n, e in (DIAGONAL[0], DIAGONAL[-1])]


def get_pilot():
    """The pilot gate's tries: the one-epoch point of draw 0 at the picked rate, at every difficulty of `EDITS` (the
    first is the rate pick's own point); none before the pick."""
    if LR is None:
        return []
    return [point(*DIAGONAL[0], LR, DRAWS[0], edits) for edits in EDITS]


def get_sweep():
    """The diagonal and the saturation row on both draws, at the picked rate and the last difficulty, the gate's try
    first (the study runs no other grid point until its record holds the gate); none before the pick (`LR` None), so
    that only `--lr_sweep` points can run then."""
    if LR is None:
        return []
    return [point(n, e, LR, d, EDITS[-1]) for d in DRAWS for n, e in DIAGONAL + SATURATION_ROW]
