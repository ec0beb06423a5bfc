"""A bad run config fails before the model loads, naming every bad key and what is allowed."""

import pathlib
import subprocess
import sys

import pytest

from bitune_jax.train.loop import run
from bitune_jax.train.validate import CHOICES, ConfigError, validate
from tests.train.tiny_run import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_MODEL = "/nonexistent/Olmo-3-1025-7B"  # were validation to pass, loading this would fail differently


def config(**overrides):
    return tiny_config(NO_MODEL, "/tmp/never_written", **overrides)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_enum_is_checked_before_the_model_loads(key):
    with pytest.raises(ConfigError) as e:
        run(config(**{key: "nonsense"}))
    message = str(e.value)
    assert f"config.{key}='nonsense'" in message
    assert all(repr(choice) in message for choice in CHOICES[key])


@pytest.mark.parametrize(
    "key,value",
    [
        ("train.epochs", 0),
        ("train.max_updates", -5),
        ("train.lr", -1e-4),
        ("train.warmup_frac", 2.0),
        ("train.accumulate", 0),
        ("checkpoint.every_steps", -1),
        ("data.batch_size", 0),
        ("peft.dropout", 1.5),
        ("mesh.sequence", 0),
        ("log.every_steps", 0),
        ("train.lr", float("inf")),
        ("train.lr", 0.0),
        ("train.b1", 1.0),
        ("train.b2", 1.0),
        ("train.eps", 0.0),
        ("train.clip", float("nan")),
        ("eval.temperature", -0.5),
        ("eval.top_p", 0.0),
        ("eval.top_p", 1.5),
        ("eval.seed", -1),
        ("seed", -1),
        ("data.pool_seed", -3),
    ],
)
def test_nonsense_numbers(key, value):
    with pytest.raises(ConfigError, match=f"config.{key}={value!r}"):
        validate(config(**{key: value}), device_count=1)


def test_an_empty_workdir_is_refused_rather_than_writing_into_the_current_folder():
    c = config()
    c.workdir = " "
    with pytest.raises(ConfigError, match="config.workdir is empty"):
        validate(c, device_count=1)


def test_all_errors_at_once_and_typed_sections():
    with pytest.raises(ConfigError) as e:
        validate(
            config(
                **{
                    "train.schedule": "cosin",
                    "model.remat": "al",
                    "saturation.threshold": 2.0,
                    "peft.method": "lora",
                    "peft.rank": 0,
                }
            ),
            device_count=1,
        )
    message = str(e.value)
    assert "config.train.schedule='cosin'" in message and "config.model.remat='al'" in message
    assert "config.saturation" in message and "threshold" in message
    assert "config.peft" in message and "rank" in message


def test_mesh_must_match_the_devices_and_the_padding():
    with pytest.raises(ConfigError, match=r"data=1 x fsdp=8 x sequence=1 x tensor=1 = 8 devices, but 1 are"):
        validate(config(**{"mesh.fsdp": 8}), device_count=1)
    with pytest.raises(ConfigError, match=r"config.data.pad_multiple=12 must be a multiple of config.mesh.sequence=8"):
        validate(config(**{"mesh.sequence": 8, "data.pad_multiple": 12}), device_count=8)
    validate(config(**{"mesh.sequence": 4, "mesh.data": 2, "data.pad_multiple": 16}), device_count=8)
    with pytest.raises(ConfigError, match=r"config.data.packing='tight'"):
        validate(config(**{"data.packing": "tight"}), device_count=1)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config.data.train_path=.*nope.jsonl.*no such file"):
        validate(config(**{"data.source": "jsonl", "data.train_path": str(tmp_path / "nope.jsonl")}), 1)
    with pytest.raises(ConfigError, match=r"config.data.chat_template=.*t.jinja.*no such file"):
        validate(config(**{"data.chat_template": str(tmp_path / "t.jinja")}), 1)


def test_unknown_key_in_a_config_file_is_an_error(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(
        "from experiments.configs.common import base\n\n\ndef get_config():\n    c = base()\n"
        "    c.train.lrr = 1e-4\n    return c\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", f"--config={path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "lrr" in out.stderr


@pytest.mark.parametrize(
    "spec",
    [
        "olmo7b_rep.py:h100x8",
        "olmo7b_rep.py:v5p-64",
        "gemma2b_bitune.py",
        "gemma2b_bitune.py:1gpu",
        "smollm2_rep.py",
        "smollm2_bitune.py",
        "study_repetition_smollm2.py",
        "study_repetition_v2_smollm2.py",
        "study_bitune_v2_smollm2.py",
        "list_edits_warmup_smollm2.py",
    ],
)
def test_shipped_configs_are_valid_on_their_meshes(spec, tmp_path):
    """Every shipped config passes validation on the device count its mesh names (paths filled in)."""
    import importlib

    name, _, arg = spec.partition(":")
    module = importlib.import_module(f"experiments.configs.{name[:-3]}")
    c = module.get_config(arg) if arg else module.get_config()
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    c.model.name = c.model.name or NO_MODEL
    if c.data.source == "jsonl":
        c.data.train_path = str(data)
    devices = c.mesh.data * c.mesh.fsdp * c.mesh.sequence * c.mesh.tensor
    validate(c, devices)


def test_a_chat_template_with_a_syntax_error_names_its_file(tmp_path):
    template = tmp_path / "broken.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}")  # no endfor
    with pytest.raises(ConfigError, match=rf"config.data.chat_template: {template}: not a valid Jinja chat template"):
        validate(config(**{"data.chat_template": str(template)}), device_count=1)
