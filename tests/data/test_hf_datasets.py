"""Rows from Hugging Face `datasets` directories and Parquet files: the same records as the JSONL reader, custom
column names and a row filter, errors named by file and row, 200,000 rows in seconds, and the trainer's pool."""

import json
import re
import time

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bitune_jax.data import DataError, read_records
from bitune_jax.data.hf_datasets import read_hf_records
from bitune_jax.train import setup, validate
from tests.train.tiny_run import tiny_config

ROWS = [
    {"prompt": "2+2?", "response": "4"},
    {"prompt": "Capital of France?", "response": "Paris."},
    {"prompt": "Name a colour.", "response": "Blue."},
    {"prompt": "3*3?", "response": "9"},
]
CHAT = [
    {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}
    for r in ROWS
]


def parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def layouts(tmp_path, rows):
    """The same rows as a save_to_disk Dataset, a DatasetDict, one Parquet file and two Parquet shards."""
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    split = datasets.DatasetDict(train=datasets.Dataset.from_list(rows), test=datasets.Dataset.from_list(rows[:1]))
    split.save_to_disk(str(tmp_path / "dict"))
    parquet(tmp_path / "one.parquet", rows)
    (tmp_path / "shards").mkdir()
    parquet(tmp_path / "shards" / "part-1.parquet", rows[3:])  # name order, not write order
    parquet(tmp_path / "shards" / "part-0.parquet", rows[:3])
    return [tmp_path / "saved", tmp_path / "dict", tmp_path / "one.parquet", tmp_path / "shards"]


def test_every_layout_reads_like_the_jsonl(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    expected = [r.messages for r in read_records(jsonl)]
    for path in layouts(tmp_path, ROWS):
        records = read_hf_records(path)
        assert [r.messages for r in records] == expected, path
        assert all(r.meta == {} for r in records)
    first, last = read_hf_records(tmp_path / "shards")[::3]
    assert first.where == f"{tmp_path / 'shards' / 'part-0.parquet'}:row 0"
    assert last.where == f"{tmp_path / 'shards' / 'part-1.parquet'}:row 0"
    assert read_hf_records(tmp_path / "dict", split="test")[0].where == f"{tmp_path / 'dict' / 'test'}:row 0"
    with pytest.raises(DataError, match=r"no split 'validation'; the splits are \['test', 'train'\]"):
        read_hf_records(tmp_path / "dict", split="validation")


def test_messages_column_and_hub_shards_of_several_splits(tmp_path):
    rows = [{**c, "id": i} for i, c in enumerate(CHAT)]
    for path in layouts(tmp_path, rows):
        records = read_hf_records(path)
        assert [r.messages for r in records] == [c["messages"] for c in CHAT], path
        assert [r.meta for r in records] == [{"id": i} for i in range(4)]
    hub = tmp_path / "hub"
    hub.mkdir()
    parquet(hub / "train-00000-of-00002.parquet", CHAT[:2])
    parquet(hub / "train-00001-of-00002.parquet", CHAT[2:3])
    parquet(hub / "test-00000-of-00001.parquet", CHAT[3:])
    assert [r.messages for r in read_hf_records(hub)] == [c["messages"] for c in CHAT[:3]]
    assert [r.messages for r in read_hf_records(hub, split="test")] == [CHAT[3]["messages"]]
    with pytest.raises(DataError, match=r"shards of splits \['test', 'train'\]"):
        read_hf_records(hub, split="dev")
    (hub / "train-00001-of-00002.parquet").unlink()  # a download cut short
    with pytest.raises(DataError, match=rf"{hub}: the 'train' shards say they are 2 files, but shards \[1\] are miss"):
        read_hf_records(hub)
    assert [r.messages for r in read_hf_records(hub, split="test")] == [CHAT[3]["messages"]]  # that split is whole


def test_custom_columns_and_the_filter(tmp_path):
    rows = [
        {"instruction": f"q{i}", "model": model, "completion": f"a{i} by {model}", "score": i}
        for i, model in enumerate(["gpt-4", "llama", "gpt-4", "gpt-3.5", "gpt-4"])
    ]
    for path in (parquet(tmp_path / "uf.parquet", rows), layouts(tmp_path, rows)[0]):
        kept = read_hf_records(
            path, prompt="instruction", response="completion", where_column="model", where_value="gpt-4"
        )
        assert [r.messages[0]["content"] for r in kept] == ["q0", "q2", "q4"], path
        assert [r.line for r in kept] == [0, 2, 4] and kept[1].meta == {"model": "gpt-4", "score": 2}
    assert len(read_hf_records(tmp_path / "uf.parquet", prompt="instruction", response="completion")) == 5
    numbers = read_hf_records(
        tmp_path / "uf.parquet", prompt="instruction", response="completion", where_column="score", where_value="3"
    )
    assert [r.line for r in numbers] == [3]  # values compare as str(value)
    with pytest.raises(DataError, match=r"no row has model='claude' \(of 5\); values include \['gpt-3.5', 'gpt-4'"):
        read_hf_records(
            tmp_path / "uf.parquet",
            prompt="instruction",
            response="completion",
            where_column="model",
            where_value="claude",
        )


def test_errors_name_the_column_or_the_file_and_row(tmp_path):
    path = parquet(tmp_path / "uf.parquet", [{"instruction": "q", "completion": "a"}])
    columns = re.escape("the columns are ['instruction', 'completion']")
    with pytest.raises(DataError, match=rf"uf.parquet: no column 'prompt' \(the prompt\).*{columns}"):
        read_hf_records(path)
    with pytest.raises(DataError, match=rf"uf.parquet: no column 'answer' \(the response\).*{columns}"):
        read_hf_records(path, prompt="instruction", response="answer")
    with pytest.raises(DataError, match=rf"no column 'model' \(the filter's where_column\); {columns}"):
        read_hf_records(path, prompt="instruction", response="completion", where_column="model", where_value="x")

    bad = ROWS[:2] + [{"prompt": "q", "response": "  "}]
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'empty.parquet'}:row 2: empty response")):
        read_hf_records(parquet(tmp_path / "empty.parquet", bad))
    nulls = ROWS[:1] + [{"prompt": None, "response": "a"}]
    with pytest.raises(DataError, match=r"null.parquet:row 1: field 'prompt' must be a string, got NoneType"):
        read_hf_records(parquet(tmp_path / "null.parquet", nulls))
    ints = [{"q": 1, "a": "x"}]
    with pytest.raises(DataError, match=r"int.parquet:row 0: field 'prompt' must be a string, got int \('prompt' is "):
        read_hf_records(parquet(tmp_path / "int.parquet", ints), prompt="q", response="a")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(bad).save_to_disk(str(saved))
    with pytest.raises(DataError, match=re.escape(f"{saved}:row 2: empty response")):
        read_hf_records(saved)
    with pytest.raises(FileNotFoundError, match="no such dataset directory or Parquet file"):
        read_hf_records(tmp_path / "nope")
    (tmp_path / "rows.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match=r"rows.jsonl: not a .parquet file \(JSONL is read with data.source=jsonl\)"):
        read_hf_records(tmp_path / "rows.jsonl")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="neither a save_to_disk directory .* nor a folder of .parquet files"):
        read_hf_records(tmp_path / "empty_dir")
    with pytest.raises(DataError, match="where_value='x' needs a where_column"):
        read_hf_records(path, where_value="x")


def test_200k_parquet_rows_read_whole(tmp_path):
    """A large shard reads every row in order (its speed is printed, not asserted: timed asserts fail on a loaded
    machine)."""
    n = 200_000
    table = pa.table({"prompt": [f"question {i}?" for i in range(n)], "response": [f"answer {i}." for i in range(n)]})
    pq.write_table(table, tmp_path / "big.parquet")
    start = time.perf_counter()
    records = read_hf_records(tmp_path / "big.parquet")
    seconds = time.perf_counter() - start
    print(f"read {n} Parquet rows in {seconds:.2f} s")
    assert len(records) == n and records[-1].response == f"answer {n - 1}."
    assert records[123_456].messages[0]["content"] == "question 123456?"


def test_the_trainer_reads_the_pool(tmp_path):
    path = parquet(tmp_path / "pool.parquet", ROWS)
    config = tiny_config("unused-model", tmp_path, **{"data.source": "hf", "data.hf.path": str(path)})
    spec = validate.validate(config, 1)
    records, source = setup.read_training_pool(spec.data)
    assert [r.response for r in records] == [r["response"] for r in ROWS]
    assert source == f"{path} (split train)"
    missing = tiny_config("m", tmp_path, **{"data.source": "hf", "data.hf.path": str(tmp_path / "nope")})
    with pytest.raises(validate.ConfigError, match=r"config.data.hf.path=.*nope.*no such file"):
        validate.validate(missing, 1)
