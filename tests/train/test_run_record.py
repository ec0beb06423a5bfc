"""The run record: trajectory-changing differences refused with each key's saved and new value, neutral ones
noted, explicit overrides recorded, and the data and weights compared by content, not by how the path is spelled."""

import json
import shutil

import pytest

from bitune_jax.train.run_record import (
    RECIPE_NAME,
    ResumeChangedError,
    check_resume,
    origin_identity,
    recipe,
    weights_identity,
    write_record,
)
from experiments.configs.common import base


def config(tmp_path, **values):
    c = base()
    c.workdir = str(tmp_path / "run")
    if not (tmp_path / "train.jsonl").exists():
        (tmp_path / "train.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    c.data.source, c.data.train_path = "jsonl", str(tmp_path / "train.jsonl")
    for key, value in values.items():
        section, leaf = key.split(".")
        c[section][leaf] = value
    return c


def started(tmp_path, c):
    notes, record = check_resume(c.workdir, c, resuming=False)
    assert notes == [] and record["changes"] == []
    write_record(c.workdir, record)


def test_changes_that_alter_the_trajectory_are_refused_with_every_key(tmp_path):
    started(tmp_path, config(tmp_path))
    with pytest.raises(ResumeChangedError) as e:
        check_resume(
            config(tmp_path).workdir, config(tmp_path, **{"train.lr": 1e-4, "data.batch_size": 2}), resuming=True
        )
    message = str(e.value)
    assert "train.lr: saved 2e-05, now 0.0001" in message and "data.batch_size: saved 1, now 2" in message
    assert "--config.resume.allow_changes=data.batch_size,train.lr" in message


def test_neutral_changes_pass_and_overrides_are_recorded(tmp_path):
    started(tmp_path, config(tmp_path))
    notes, record = check_resume(config(tmp_path).workdir, config(tmp_path, **{"log.every_steps": 7}), resuming=True)
    assert notes == ["resuming with a changed log.every_steps (no effect on the trajectory): 1 -> 7"]
    c = config(tmp_path, **{"train.lr": 1e-4, "resume.allow_changes": "train"})  # a whole section
    notes, record = check_resume(c.workdir, c, resuming=True, step=12)
    assert any("train.lr (allowed by resume.allow_changes): 2e-05 -> 0.0001" in n for n in notes)
    assert record["changes"][-1]["after_step"] == 12 and record["changes"][-1]["changes"]["train.lr"] == [2e-5, 1e-4]
    write_record(c.workdir, record)
    notes, _ = check_resume(c.workdir, config(tmp_path, **{"train.lr": 1e-4}), resuming=True)
    assert not any("train.lr" in n for n in notes)  # the record now holds the new value


def test_data_is_compared_by_content(tmp_path):
    started(tmp_path, config(tmp_path))
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(tmp_path / "train.jsonl", moved)
    notes, _ = check_resume(
        config(tmp_path).workdir, config(tmp_path, **{"data.train_path": str(moved)}), resuming=True
    )
    assert notes and all("no effect" in n for n in notes)  # same rows under another path
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "response": "c"}\n')  # same path, other rows
    with pytest.raises(ResumeChangedError, match="data.train_path:contents"):
        check_resume(config(tmp_path).workdir, config(tmp_path), resuming=True)


def test_weights_identity_follows_content_not_path(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"header" + bytes(3 << 20))
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)
    assert weights_identity(str(model)) == weights_identity(str(model) + "/") == weights_identity(str(copy))
    (copy / "model.safetensors").write_bytes(b"header" + bytes((3 << 20) - 1) + b"\x01")  # same size, other tail
    assert weights_identity(str(copy)) != weights_identity(str(model))
    assert weights_identity("smollm2-135m-instruct") == "name:smollm2-135m-instruct"


def test_an_hf_dataset_directory_is_compared_by_content(tmp_path):
    """data.source=hf: a copy of the dataset elsewhere resumes; the same folder with another shard is refused."""
    shards = tmp_path / "dataset"
    shards.mkdir()
    (shards / "train-00000-of-00001.parquet").write_bytes(b"PAR1 rows PAR1")

    def hf_config(path):
        c = base()
        c.workdir = str(tmp_path / "run")
        c.data.source, c.data.hf.path = "hf", str(path)
        return c

    started(tmp_path, hf_config(shards))
    shutil.copytree(shards, tmp_path / "copy")
    notes, _ = check_resume(hf_config(shards).workdir, hf_config(tmp_path / "copy"), resuming=True)
    assert all("no effect" in n for n in notes)
    (shards / "train-00001-of-00002.parquet").write_bytes(b"PAR1 more PAR1")
    with pytest.raises(ResumeChangedError, match="contents"):
        check_resume(hf_config(shards).workdir, hf_config(shards), resuming=True)


def test_synthetic_data_is_compared_by_its_generated_records(tmp_path, monkeypatch):
    """A changed generator under unchanged settings is other data: the resume is refused, naming it."""
    from bitune_jax.tasks import list_edits

    c = base()
    c.workdir = str(tmp_path / "run")
    c.data.synthetic.task, c.data.synthetic.pool_size, c.data.synthetic.test_size = "list_edits", 16, 4
    started(tmp_path, c)
    assert check_resume(c.workdir, c, resuming=True)[0] == []  # the same records: nothing to note
    monkeypatch.setattr(list_edits, "REMARK_P", 0.0)  # the same config, traces without remarks
    with pytest.raises(ResumeChangedError, match="data.synthetic:contents"):
        check_resume(c.workdir, c, resuming=True)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["data"] = None  # a record from before synthetic data was identified: nothing to compare against
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    assert check_resume(c.workdir, c, resuming=True)[0] == []


def test_a_model_with_a_recipe_is_named_by_how_it_was_made(tmp_path):
    """Two runs that differ only in paths and logging have one recipe; a retrained copy of the exported model (other
    low bits) keeps the recipe's identity, and a model without one falls back to its bytes. A model trained from a
    model with a recipe names that base by its recipe, so a chain of fine-tunes keeps its identity at every link."""
    a, b = tmp_path / "a", tmp_path / "b"
    c = tmp_path / "c"
    for root in (a, b, c):
        root.mkdir()
    started(a, config(a, **{"log.every_steps": 1}))
    started(b, config(b, **{"log.every_steps": 50}))
    assert recipe(a / "run") == recipe(b / "run")
    assert "workdir" not in recipe(a / "run")["config"] and "path" not in recipe(a / "run")["data"]
    started(c, config(c, **{"train.lr": 1e-4}))
    assert recipe(c / "run") != recipe(a / "run")

    for root, tail in ((a, b"\x00"), (b, b"\x01")):  # the same recipe, weights that differ in the last byte
        model = root / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"header" + bytes(3 << 20) + tail)
    assert origin_identity(str(a / "model")) == weights_identity(str(a / "model"))  # no recipe: the bytes
    assert weights_identity(str(a / "model")) != weights_identity(str(b / "model"))
    for root in (a, b):
        (root / "model" / RECIPE_NAME).write_text(json.dumps(recipe(root / "run")))
    assert origin_identity(str(a / "model")) == origin_identity(str(b / "model"))
    assert origin_identity(str(a / "model")).startswith("recipe:")

    # a chain: fine-tunes of the two retrained copies name their base by its recipe, so they share one recipe too
    d, e = tmp_path / "d", tmp_path / "e"
    for root, base_model in ((d, a / "model"), (e, b / "model")):
        root.mkdir()
        started(root, config(root, **{"model.name": str(base_model)}))
    assert recipe(d / "run") == recipe(e / "run") and recipe(d / "run")["weights"].startswith("recipe:")
    assert json.loads((d / "run" / "run.json").read_text())["weights"].startswith("sha256:")  # resumes: the bytes

    (b / "model" / RECIPE_NAME).write_text(json.dumps(recipe(c / "run")))
    assert origin_identity(str(a / "model")) != origin_identity(str(b / "model"))
    shutil.rmtree(e / "run")
    started(e, config(e, **{"model.name": str(b / "model")}))  # a base made by another recipe
    assert recipe(d / "run") != recipe(e / "run")


def test_checkpoints_without_a_record_are_refused_unless_any_change_is_allowed(tmp_path):
    """A deleted run.json must not let a resume with a 500x learning rate through and rewrite the record."""
    c = config(tmp_path, **{"train.lr": 1e-2})
    with pytest.raises(ResumeChangedError, match=r"holds checkpoints but no run.json .*allow_changes='\*'"):
        check_resume(c.workdir, c, resuming=True, step=4)
    c = config(tmp_path, **{"train.lr": 1e-2, "resume.allow_changes": "*"})
    notes, record = check_resume(c.workdir, c, resuming=True, step=4)
    assert notes == [] and record["config"]["train.lr"] == 1e-2


def test_edited_tokenizer_files_and_chat_templates_are_seen(tmp_path):
    """Edits that change every training row without touching the weights or the data file: the model directory's
    tokenizer config or chat template, and the `data.chat_template` file (compared by contents, not by path)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    (tmp_path / "template.jinja").write_text("{{ messages }}")
    shutil.copy(tmp_path / "template.jinja", tmp_path / "same.jinja")

    def run_config(template="template.jinja", allow=""):
        values = {"model.name": str(model), "data.chat_template": str(tmp_path / template)}
        return config(tmp_path, **values, **{"resume.allow_changes": allow})

    started(tmp_path, run_config())
    notes, _ = check_resume(run_config().workdir, run_config("same.jinja"), resuming=True)
    assert not any("contents" in n for n in notes), notes  # the same template under another name
    (model / "tokenizer_config.json").write_text('{"eos_token": "<|im_end|>"}')
    (tmp_path / "template.jinja").write_text("{{ messages | tojson }}")
    with pytest.raises(ResumeChangedError) as e:
        check_resume(run_config().workdir, run_config(), resuming=True)
    assert "model.name:tokenizer" in str(e.value) and "data.chat_template:contents" in str(e.value)
    notes, record = check_resume(run_config().workdir, run_config(allow="model.name,data.chat_template"), resuming=True)
    assert any("model.name:tokenizer (allowed by resume.allow_changes)" in n for n in notes), notes
    record.pop("text")  # a record from before the tokenizer was kept: nothing of it is compared
    write_record(run_config().workdir, record)
    (model / "tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
    notes, _ = check_resume(run_config().workdir, run_config(), resuming=True)
    assert not any("tokenizer" in n for n in notes), notes
