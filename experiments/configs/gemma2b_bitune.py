"""The Bitune recipe on Gemma-2B, as in the paper (the authors' `instruct.sh`): needs a local Hugging Face directory
of google/gemma-2b and UltraFeedback prepared as the authors do (GPT-4 completions, joint tokenization, examples
over 512 tokens dropped, the last 1,000 held out):

    python -m experiments.prepare_bitune_data ultrafeedback --source /path/to/UltraFeedback \\
        --tokenizer /path/to/gemma-2b --out data/bitune/ultrafeedback
    python -m experiments.run --config=experiments/configs/gemma2b_bitune.py \\
        --config.model.name=/path/to/gemma-2b

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
    c.data.train_path = "data/bitune/ultrafeedback/train.jsonl"  # experiments/prepare_bitune_data.py
    if platform == "h100x8":
        c.mesh.data, c.mesh.sequence = 2, 4  # 10 rows do not split 8 ways; 5 rows x 128 tokens per GPU do
    elif platform != "1gpu":
        raise ValueError(f"unknown platform {platform!r}; use h100x8 or 1gpu")
    return c


def get_sweep():
    """The LoRA baseline and Bitune at each of the authors' seeds 42, 43, 44."""
    return [
        {**p, "workdir": p["workdir"].replace("runs/smollm2_bitune", "runs/gemma2b_bitune")}
        for p in smollm2_bitune.get_sweep()
    ]
