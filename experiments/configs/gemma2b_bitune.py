"""The Bitune recipe on Gemma-2B, as in the paper: needs a local Hugging Face directory of google/gemma-2b and an
instruction set (UltraFeedback GPT-4 completions in the paper) as JSONL.

    python -m experiments.run --config=experiments/configs/gemma2b_bitune.py \\
        --config.model.name=/path/to/gemma-2b --config.data.train_path=/path/to/ultrafeedback.jsonl
"""

from experiments.configs import smollm2_bitune


def get_config():
    c = smollm2_bitune.get_config()
    c.workdir = "runs/gemma2b_bitune"
    c.model.name = ""  # required: local google/gemma-2b
    c.model.dtype = "bfloat16"
    c.model.attn_impl = "auto"
    c.data.source = "jsonl"
    c.data.train_path = ""  # required
    return c
