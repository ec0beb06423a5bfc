"""Bitune study v3 (docs/bitune_study_v3/PREREGISTRATION.md): does the bidirectional second reading beat LoRA, and
does the gain need bidirectionality or only more adapter parameters?

    python -m experiments.bitune_v3_model_choice                      # step 0, recorded: Gemma 3 270M
    python -m experiments.study_bitune --config=experiments/configs/study_bitune_v3_gemma3.py \\
        --out=docs/bitune_study_v3 --pilot                             # the seed-42 runs, every 100 updates scored
    python -m experiments.study_bitune --config=experiments/configs/study_bitune_v3_gemma3.py \\
        --out=docs/bitune_study_v3                                     # the arms, seeds 42 and 43

Model: Gemma 3 270M (`docs/bitune_study_v3/model_choice.md`: its untrained Bitune loss starts 17% above LoRA's,
SmolLM2's 161%), the authors' model family; its tokenizer adds BOS, so training and scoring both start with one.
Task: two-hop problems in reverse order, K = 8, drawn as v2's (4,000 training and 500 held-out problems, data seed 0),
in the authors' downstream format, scored by the log-likelihood of each listed choice. K was 6 until the K = 6 pilot
put LoRA r8 at 1.0 held-out accuracy from update 400 (PREREGISTRATION.md, "Changes").

Recipe (`smollm2_bitune.py`, the paper's): LoRA rank 8, lora_alpha 1, every projection; tau 0.01; AdamW eps 1e-6,
linear schedule with 10% warmup, clip 1.0, batch 10; at lr 1e-3 (the authors' `downstream.sh` rate) for 600 updates,
fixed in advance. Arms, seeds 42 and 43: LoRA r8 (the baseline), LoRA r16 (parameter-matched to Bitune's two rank-8
sets; lora_alpha stays 1, as for every arm, so its scale alpha / r is 1/16), Bitune, and Bitune causal-only
(`bitune.bidirectional=False`). Two passes over the pool (`train.epochs=2`): 600 updates of 10 read 6,000 examples.

The pilot gate: LoRA r8 and Bitune at seed 42, a checkpoint every 100 updates scored on the first 200 held-out
problems; both curves must flatten (the last two checkpoints within `PILOT_GATE` accuracy) or the budget grows to
900 updates for every arm, once, and the reason is recorded. And LoRA's last checkpoint must stay at most
`PILOT_CEILING`; if it does not at K = 8, the task's hardest setting, the study stops and reports primary 1 as
unresolved at the ceiling.
"""

from experiments.configs import study_bitune_v2_smollm2 as v2

DATA = "runs/study_bitune_v3/data"  # the study writes train_{order}_k{K}.jsonl here (v2's problems)
MODEL = "gemma3-270m"
NUM_FACTS = 8  # 6 until the K = 6 pilot put LoRA r8 at 1.0 (PREREGISTRATION.md, "Changes", 2026-12-06)
ORDERS = ("reverse",)
SEEDS = (42, 43)
DATA_SEED, TRAIN_ITEMS, TEST_ITEMS = v2.DATA_SEED, v2.TRAIN_ITEMS, v2.TEST_ITEMS
UPDATES = 600
LR = 1e-3
ARMS = {  # arm -> config overrides
    "lora": {"objective": "peft"},
    "lora_r16": {"objective": "peft", "peft.rank": 16},
    "bitune": {"objective": "bitune", "bitune.bidirectional": True},
    "bitune_causal": {"objective": "bitune", "bitune.bidirectional": False},
}
# The report's paired differences, pooled over seeds: primary 1, then primary 2 (judged only if primary 1 is
# reproduced), then the secondary ones.
COMPARISONS = (
    ("bitune", "lora"),
    ("bitune", "bitune_causal"),
    ("bitune", "lora_r16"),
    ("lora_r16", "lora"),
    ("bitune_causal", "lora"),
)
PILOT_ARMS = ("lora", "bitune")
PILOT_EVERY = 100  # a checkpoint (and a held-out score) every this many updates
PILOT_ITEMS = 200
PILOT_GATE = 0.03  # the last two checkpoints' accuracies differ by at most this, for both arms
PILOT_CEILING = 0.9  # the baseline's (LoRA r8's) last checkpoint at most this: at 1.0 no arm can beat it


def train_path(order: str, num_facts: int = NUM_FACTS) -> str:
    return f"{DATA}/train_{order}_k{num_facts}.jsonl"


def get_config():
    c = v2.get_config()
    c.workdir = "runs/study_bitune_v3"
    c.model.name = MODEL
    c.data.train_path = train_path("reverse")
    c.train.lr = LR
    c.train.max_updates = UPDATES
    c.train.epochs = 2  # 600 updates x 10 = 1.5 passes over the 4,000 problems; max_updates ends the run
    return c


def point(arm: str, order: str, seed: int, num_facts: int = NUM_FACTS) -> dict:
    return {
        **ARMS[arm],
        "seed": seed,
        "data.train_path": train_path(order, num_facts),
        "workdir": f"runs/study_bitune_v3/{arm}_{order}_seed{seed}",
    }


def get_sweep():
    """Every arm x seed; the study pairs them by seed, item by item."""
    return [point(arm, order, seed) for order in ORDERS for arm in ARMS for seed in SEEDS]


def get_pilot(num_facts: int = NUM_FACTS):
    """LoRA r8 (the baseline, first) and Bitune at seed 42, checkpointed every PILOT_EVERY updates (kept, all of
    them). `num_facts=6`: the first pilot, whose LoRA record (`pilot_k6/`) is why K is 8."""
    name = "reverse" if num_facts == 6 else f"reverse_k{num_facts}"  # the K = 6 pilot was named before K changed
    return [
        {
            **point(arm, "reverse", SEEDS[0], num_facts),
            "checkpoint.every_steps": PILOT_EVERY,
            "checkpoint.keep": UPDATES // PILOT_EVERY,
            "workdir": f"runs/study_bitune_v3/pilot_{arm}_{name}_seed{SEEDS[0]}",
        }
        for arm in PILOT_ARMS
    ]


def get_pilot_k6():
    """The first pilot, at K = 6 (its LoRA run is recorded under `pilot_k6/`; the Bitune run stopped unscored)."""
    return get_pilot(6)
