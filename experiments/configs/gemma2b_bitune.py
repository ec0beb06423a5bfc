"""The Bitune recipe on Gemma-2B, as in the paper: needs a local Hugging Face directory of google/gemma-2b and an
instruction set (UltraFeedback GPT-4 completions in the paper) as JSONL.

    python -m experiments.run --config=experiments/configs/gemma2b_bitune.py \\
        --config.model.name=/path/to/gemma-2b --config.data.train_path=/path/to/ultrafeedback.jsonl

The argument after ':' picks the mesh: h100x8 (the default: the batch of 10 rows over data=2, each row's 512 tokens
over sequence=4, the frozen base sharded over those 4) or 1gpu (one device).
"""

from experiments.configs import smollm2_bitune


def get_config(platform: str = "h100x8"):
    c = smollm2_bitune.get_config()
    c.workdir = "runs/gemma2b_bitune"
    c.model.name = ""  # required: local google/gemma-2b
    c.model.dtype = "bfloat16"
    c.model.attn_impl = "auto"
    c.data.source = "jsonl"
    c.data.train_path = ""  # required
    if platform == "h100x8":
        c.mesh.data, c.mesh.sequence = 2, 4  # 10 rows do not split 8 ways; 5 rows x 128 tokens per GPU do
    elif platform != "1gpu":
        raise ValueError(f"unknown platform {platform!r}; use h100x8 or 1gpu")
    return c
