"""The repetition study at toy scale (docs/method.md A): one update budget split as samples x epochs, SmolLM2 on CPU.

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_smollm2.py

Every grid point is the embedded default's recipe (`smollm2_rep.py`: full fine-tune, AdamW, cosine with 10% warmup
over the whole budget, clip 1.0, one sequence per update) with the same number of updates; only how they are spent
differs: many samples seen once, or few samples seen many times. Samples are nested prefixes of one shuffled pool
of the synthetic long-CoT task, as in the paper. Every epoch is trained (the paper's runs do not stop early); the
epoch at which the saturation rule would have stopped is computed from the logged token accuracy and marked.
Held-out accuracy (greedy, last `\\boxed{}` exact match on the task's disjoint test set) is measured before
training, halfway through each run's epochs, and at the end.
"""

from experiments.configs import smollm2_rep

BUDGET = 128  # updates per grid point
GRID = [(128, 1), (32, 4), (8, 16), (2, 64)]  # (samples, epochs), samples x epochs = BUDGET


def get_config():
    c = smollm2_rep.get_config()
    c.workdir = "runs/study_repetition"
    c.data.synthetic.pool_size = 256
    c.train.max_updates = BUDGET
    c.saturation.enabled = False
    c.saturation.metric = "token_accuracy"  # as recorded: the default before it became sample_token_accuracy
    c.checkpoint.every_steps = 0  # only the final state; a study point is rerun whole if interrupted
    c.eval.at_start = True
    c.eval.num_items = 64
    c.eval.batch_size = 64
    c.eval.max_new_tokens = 160  # test responses are at most 121 tokens with SmolLM2's tokenizer
    return c


def get_sweep():
    """The fixed-budget diagonal; each point evaluates halfway and at the end."""
    return [
        {
            "data.num_samples": n,
            "train.epochs": e,
            "eval.every_epochs": max(1, e // 2),
            "workdir": f"runs/study_repetition/{n}x{e}",
        }
        for n, e in GRID
    ]
