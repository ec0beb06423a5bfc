"""`experiments/list_edits_warmup.py` without a model: the training file it writes reads back through the project's
own record reader as the items' prompt/gold pairs, and the held-out items share no prompt with the training items."""

import pytest

from bitune_jax.data import list_edits
from bitune_jax.data.records import read_jsonl
from experiments.list_edits_warmup import make_items, write_training_jsonl


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
