"""`experiments/list_edits_warmup.py` without a model: the training file it writes reads back through the project's
own record reader as the items' prompt/gold pairs, and the held-out items share no prompt with the training items."""

import json

import pytest

from bitune_jax.data.records import read_jsonl
from bitune_jax.tasks import list_edits
from experiments.list_edits_warmup import export_warmed, make_items, write_training_jsonl


def test_training_rows_read_back_and_held_out_is_disjoint(tmp_path):
    train, held_out, dropped = make_items(60, 40, train_seed=1, eval_seed=0)
    assert len(train) == 60 and len(held_out) == 40 and dropped >= 0
    assert held_out == list_edits.single_step_items(40, seed=0)  # the gate's set does not depend on the training size
    assert not {it["prompt"] for it in train} & {it["prompt"] for it in held_out}
    assert {(it["family"], it["op"]) for it in train} == {(f, op) for f in list_edits.FAMILIES for op in list_edits.OPS}

    path = write_training_jsonl(train, tmp_path / "out" / "train.jsonl")
    records = read_jsonl(path)
    assert len(records) == len(train)
    for record, item in zip(records, train, strict=True):
        assert [m["role"] for m in record.messages] == ["user", "assistant"]
        assert record.prompt_messages[0]["content"] == item["prompt"]
        assert record.response == item["gold"]
        assert list_edits.parse_list(record.response) == item["after"]
        assert record.meta == {"family": item["family"], "op": item["op"]}

    with pytest.raises(ValueError, match="must differ"):
        make_items(10, 10, train_seed=3, eval_seed=3)


def test_the_warmed_model_is_exported_with_its_recipe(tmp_path):
    import bitune_jax as bj
    from bitune_jax.train.run_record import RECIPE_NAME, check_resume, origin_identity, recipe, write_record
    from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

    model_dir = write_tiny_model(tmp_path / "tiny", smollm2_tokenizer())
    c = tiny_config(model_dir, tmp_path / "run")
    write_record(c.workdir, check_resume(c.workdir, c, resuming=False)[1])  # what a started run records
    exported = export_warmed(bj.load(str(model_dir)), c.workdir, tmp_path / "model")
    assert (exported / "config.json").exists()
    assert json.loads((exported / RECIPE_NAME).read_text()) == recipe(c.workdir)
    assert origin_identity(str(exported)).startswith("recipe:")
