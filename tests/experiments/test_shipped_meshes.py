"""Every shipped config that names a mesh runs as shipped on 8 simulated devices: `python -m experiments.run` with
only the model path, the data path and the shapes (length, samples, epochs) overridden, on tiny checkpoints of the
config's family written here (Olmo-3 for olmo7b_rep, Gemma for gemma2b_bitune; SmolLM2's tokenizer)."""

import json
import os
import pathlib
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.train.tiny_run import smollm2_tokenizer

if TYPE_CHECKING:
    import transformers

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
)


def write(directory: pathlib.Path, config: "transformers.PretrainedConfig", tokenizer) -> pathlib.Path:
    import torch  # here and in `models`, so that collecting the unit tier does not import torch
    import transformers

    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_hf(directory)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import transformers

    tok = smollm2_tokenizer()
    ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_ids[0])
    root = tmp_path_factory.mktemp("models")
    olmo = transformers.Olmo3Config(**SMALL, **ids, tie_word_embeddings=False, sliding_window=64)
    gemma = transformers.GemmaConfig(**SMALL, **ids, hidden_activation="gelu_pytorch_tanh")
    return {"olmo3": write(root / "olmo3", olmo, tok), "gemma": write(root / "gemma", gemma, tok)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {
            "prompt": f"What is {a} + {b}?",
            "response": f"<think>{a} plus {b} makes {a + b}.</think> The answer is \\boxed{{{a + b}}}.",
        }
        for a, b in [(2, 3), (10, 7), (4, 4), (21, 5), (6, 9), (8, 1)]
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CASES = {
    # config: (model, shape overrides)
    "olmo7b_rep.py:h100x8": (
        "olmo3",
        [
            "--config.data.max_len=256",
            "--config.data.num_samples=3",
            "--config.data.val_size=2",
            "--config.train.epochs=2",
        ],
    ),
    "olmo7b_rep.py:v5p-8": (
        "olmo3",
        [
            "--config.data.max_len=256",
            "--config.data.num_samples=3",
            "--config.data.val_size=2",
            "--config.train.epochs=2",
            "--config.distributed.enabled=False",
        ],
    ),
    "gemma2b_bitune.py:h100x8": ("gemma", ["--config.train.max_updates=2"]),
}


@pytest.mark.parametrize("spec", sorted(CASES))
def test_runs_as_shipped_on_8_devices(spec, models, data, tmp_path):
    model, shapes = CASES[spec]
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        f"--config=experiments/configs/{spec}",
        f"--config.model.name={models[model]}",
        f"--config.data.train_path={data}",
        f"--config.workdir={tmp_path / 'run'}",
        *shapes,
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == summary["planned_updates"] > 0
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["scope"] == "step"
    ]
    assert len(losses) == summary["steps"] and all(x == x and x > 0 for x in losses)
    if "--config.data.val_size=2" in shapes:  # validation runs on the mesh too, after the last epoch
        assert summary["history"][-1]["val_loss"] > 0
