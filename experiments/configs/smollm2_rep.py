"""The embedded default: repetition SFT (docs/method.md A) scaled to SmolLM2-135M-Instruct on 2 CPU cores.

The authors' recipe with the sizes cut to fit minutes on a laptop CPU: full fine-tune, AdamW, cosine schedule with
10% warmup, clip 1.0, one sequence per update, many epochs over few samples of the project's synthetic long-CoT
task (<think> trace, \\boxed{} answer), stopped by training token accuracy. lr is raised from 2e-5 (7B) to 1e-4:
a 135M model trained for a couple hundred updates needs the larger step to reach memorization.
"""

from experiments.configs.common import base


def get_config():
    c = base()
    c.workdir = "runs/smollm2_rep"
    c.objective = "full"
    c.data.num_samples = 8
    c.data.max_len = 320
    c.data.pad_multiple = 320  # one padded shape: a single compilation on CPU
    c.data.synthetic.min_steps = 3
    c.data.synthetic.max_steps = 5
    c.train.epochs = 16
    c.train.lr = 1e-4
    c.saturation.threshold = 0.99
    c.saturation.min_epochs = 3
    c.checkpoint.every_steps = 48
    return c
