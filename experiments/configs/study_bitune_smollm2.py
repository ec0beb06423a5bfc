"""The Bitune study at toy scale (docs/method.md B): Bitune vs the single-LoRA baseline, same data and budget, 3 seeds.

    python -m experiments.study_bitune --config=experiments/configs/study_bitune_smollm2.py

SmolLM2-135M-Instruct on the synthetic arithmetic task without the reasoning trace (`cot=False`: the answer is
only "The answer is \\boxed{N}.", so the model must read the whole problem and compute the result itself), one
event per problem ("Elsa has 20 cookies. Maya gives Elsa 4 cookies. How many ...?"), in the paper's plain format
"Question: ...\\n\\nAnswer:". Both arms use LoRA rank 8 on every projection with the paper's lora_alpha 1; Bitune
adds a second adapter set for the bidirectional prompt pass and per-layer mixing coefficients (tau 0.01). AdamW,
linear schedule with 10% warmup, clip 1.0, as in `smollm2_bitune.py`, with the budget cut to CPU minutes (40
updates of 4 examples) and lr raised to 1e-3 (the paper's GSM8K setting) for the short budget. Seeds 42, 43, 44 as
in the paper; a seed sets the adapter initialization and the data order, the training pool is the same.
Held-out accuracy: greedy exact match of the last `\\boxed{}` on 128 test problems disjoint from the pool.
"""

from experiments.configs import smollm2_bitune

SEEDS = (42, 43, 44)
ARMS = {"lora": "peft", "bitune": "bitune"}  # arm name -> objective


def get_config():
    c = smollm2_bitune.get_config()
    c.workdir = "runs/study_bitune"
    c.data.synthetic.cot = False
    c.data.synthetic.min_steps = 1
    c.data.synthetic.max_steps = 1
    c.data.synthetic.pool_size = 2_048
    c.data.synthetic.test_size = 128
    c.data.max_len = 72
    c.data.pad_multiple = 72  # one padded shape: a single compilation
    c.data.batch_size = 4
    c.train.epochs = 1
    c.train.max_updates = 40
    c.train.lr = 1e-3
    c.checkpoint.every_steps = 0
    c.eval.every_epochs = 1
    c.eval.num_items = 128
    c.eval.batch_size = 64
    c.eval.max_new_tokens = 16
    return c


def get_sweep():
    return [
        {"objective": objective, "seed": seed, "workdir": f"runs/study_bitune/{arm}_seed{seed}"}
        for arm, objective in ARMS.items()
        for seed in SEEDS
    ]
