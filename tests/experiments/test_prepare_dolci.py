"""`experiments/prepare_dolci.py` against the repetition authors' own pipeline, run literally with `datasets`.

The reference is data/convert_dolci.py then data/split.py (dkopi/data-repetition, fcb45d8) on a synthetic Dolci of
5,000 rows in three Parquet shards, with a small `first`, a small token threshold and a tiny tokenizer whose
post-processor adds a BOS; `num_proc` is left out (the authors' 64 processes keep row order). `pool.jsonl` must
hold the same rows in the same order: the validation set, then every nested train set as a prefix of the rest.
"""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bitune_jax.data.records import DataError
from experiments import prepare_dolci as pdl

ROWS, FIRST, THRESHOLD, VAL, START_N, SUBSETS = 5000, 4000, 40, 200, 100, 6
SHARDS = (1800, 1700, 1500)
WORDS = ["alpha", "beta", "gamma", "delta", "épsilon", "日本", "x²", "🙂"]


def _words(rng, n):
    return " ".join(rng.choice(WORDS, n).tolist())


def _think(rng, i, n):
    """A response of exactly `n` whitespace-separated words, tags included."""
    return f"<think> {_words(rng, n - 3)} </think> answer{i}"


def synthetic_rows(n=ROWS, seed=0):
    """Dolci-like rows: mostly single-turn with <think>...</think>, and every kind the authors' filters drop or keep."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = rng.choice(["good", "no_close", "no_open", "system", "three", "assistant_first", "long"],
                          p=[0.55, 0.08, 0.05, 0.08, 0.1, 0.04, 0.1])  # fmt: skip
        user = {"role": "user", "content": f"question {i}:\n{_words(rng, int(rng.integers(1, 6)))}"}
        n_words = int(rng.integers(THRESHOLD + 5, THRESHOLD + 60)) if kind == "long" else int(rng.integers(4, 50))
        reply = {"role": "assistant", "content": _think(rng, i, n_words)}
        if kind == "no_close":
            reply["content"] = reply["content"].replace("</think>", "")
        elif kind == "no_open":
            reply["content"] = reply["content"].replace("<think>", "")
        messages = [user, reply]
        if kind == "system":
            messages = [{"role": "system", "content": "be brief"}, user, reply]
        elif kind == "three":
            messages = [user, reply, {"role": "user", "content": f"and then {i}?"}]
            if rng.random() < 0.5:
                messages.append({"role": "assistant", "content": "<think> more </think> done"})
        elif kind == "assistant_first":
            messages = [reply, user]
        rows.append({"id": f"dolci-{i}", "messages": messages, "row": i})
    return rows


def write_shards(rows, folder):
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    paths, start = [], 0
    for k, size in enumerate(SHARDS):
        paths.append(folder / f"train-{k:05d}-of-{len(SHARDS):05d}.parquet")
        pq.write_table(table.slice(start, size), paths[-1], row_group_size=500)
        start += size
    assert start == len(rows)
    return paths


def write_tokenizer(folder, truncate_at=None):
    """Word-level (whitespace) tokenizer whose post-processor adds `<s>`: a response of k words is k+1 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[UNK]": 0, "<s>": 1, "<think>": 2, "</think>": 3, **{w: 4 + k for k, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    if truncate_at:  # stored truncation must not cap the count (transformers switches it off too)
        tok.enable_truncation(truncate_at)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def dolci(tmp_path_factory):
    root = tmp_path_factory.mktemp("dolci")
    rows = synthetic_rows()
    return {"rows": rows, "shards": write_shards(rows, root / "data"), "tokenizer": write_tokenizer(root / "tok", 8)}


def authors_pipeline(shards, tokenizer_dir, cache_dir):
    """convert_dolci.py and split.py, literally (num_proc left out), on the local shards; `row` rides along."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir / "tokenizer.json"))
    ds = Dataset.from_parquet([str(p) for p in shards], cache_dir=str(cache_dir))
    ds = ds.shuffle(seed=42)
    ds = ds.select(range(FIRST))
    counts = {"selected": len(ds)}
    ds = ds.filter(lambda x: x["messages"][0]["role"] == "user" and x["messages"][1]["role"] == "assistant")
    counts["user_assistant"] = len(ds)
    ds = ds.map(
        lambda x: {"query": x["messages"][0]["content"], "response": x["messages"][1]["content"], "solution": None}
    )
    ds = ds.remove_columns([c for c in ds.column_names if c not in ["query", "response", "solution", "row"]])
    ds = ds.filter(lambda x: "<think>" in x["response"] and "</think>" in x["response"])
    counts["think"] = len(ds)
    ds = ds.filter(lambda x: len(tokenizer(x["response"])["input_ids"]) < THRESHOLD)
    counts["under_max_tokens"] = len(ds)
    # split.py
    ds = ds.shuffle(seed=42)
    val = ds.select(range(VAL))
    ds = ds.select(range(VAL, len(ds)))
    splits = {}
    for i in range(SUBSETS):
        end_idx = START_N * (2**i)
        if end_idx <= len(ds):  # split.py would fail on a size that does not fit
            splits[end_idx] = ds.select(range(end_idx))
    return val, splits, counts


def _rows(split):
    return [{"prompt": r["query"], "response": r["response"], "dolci_row": r["row"]} for r in split]


def _pool(out):
    return [json.loads(line) for line in (out / "pool.jsonl").read_text(encoding="utf-8").splitlines()]


def test_pool_equals_the_authors_split_row_for_row(dolci, tmp_path):
    val, splits, counts = authors_pipeline(dolci["shards"], dolci["tokenizer"], tmp_path / "cache")
    args = ["--tokenizer", str(dolci["tokenizer"]), "--out", str(tmp_path / "out"), "--first", str(FIRST)]
    args += ["--max_response_tokens", str(THRESHOLD), "--val", str(VAL), "--start_n", str(START_N)]
    args += ["--subsets", str(SUBSETS), "--seed", "42"]
    manifest = pdl.main(["--source", str(dolci["shards"][0].parent), *args])
    pool = _pool(tmp_path / "out")

    # every filter bites, and several nested sizes fit while the largest does not
    assert counts["selected"] > counts["user_assistant"] > counts["think"] > counts["under_max_tokens"] > 1700
    assert sorted(splits) == [100, 200, 400, 800, 1600] and manifest["train_sizes"] == sorted(splits)
    assert manifest["counts"] == counts and manifest["pool_rows"] == len(pool) == counts["under_max_tokens"]
    assert any(len(dolci["rows"][r["dolci_row"]]["messages"]) > 2 for r in pool)

    assert pool[:VAL] == _rows(val)
    for n, split in splits.items():
        assert pool[VAL : VAL + n] == _rows(split), n
    assert all(r["prompt"] == dolci["rows"][r["dolci_row"]]["messages"][0]["content"] for r in pool)

    text = (tmp_path / "out" / "pool.jsonl").read_bytes()
    assert "日本".encode() in text and b"\\u" not in text  # ensure_ascii=False, UTF-8
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(text).hexdigest()
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == manifest and on_disk["seed"] == 42 and on_disk["first"] == FIRST and on_disk["val"] == VAL
    assert on_disk["special_tokens_added"] == 1 and on_disk["source_rows"] == ROWS
    assert on_disk["command"].startswith("python -m experiments.prepare_dolci --source ")

    # the same pool from a single .parquet file and from a save_to_disk directory
    from datasets import Dataset

    single = tmp_path / "one.parquet"
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in dolci["shards"]]), single)
    Dataset.from_parquet(str(single), cache_dir=str(tmp_path / "cache2")).save_to_disk(str(tmp_path / "saved"))
    for k, source in enumerate([single, tmp_path / "saved"]):
        again = pdl.main(["--source", str(source), *args[:3], str(tmp_path / f"out{k}"), *args[4:]])
        assert again["sha256"] == manifest["sha256"], source


def test_pure_core_matches_numpy_and_datasets():
    from datasets import Dataset

    for n in (0, 1, 7, 1000):
        ds = Dataset.from_dict({"i": list(range(n))}).shuffle(seed=42)
        assert ds["i"] == pdl.authors_permutation(n, 42).tolist() == pdl.split_order(n, 42).tolist()
    assert pdl.train_sizes(1000 + 850, 1000, 100, 10) == [100, 200, 400, 800]
    assert pdl.train_sizes(1000 + 51200, 1000) == [100 * 2**i for i in range(10)]

    user = {"role": "user", "content": "q"}
    rows = [
        {"messages": [user, {"role": "assistant", "content": "<think>a</think>b"}]},
        [{"role": "system", "content": "s"}, user, {"role": "assistant", "content": "<think>a</think>"}],
        [user, {"role": "assistant", "content": "<think>a"}],
        [user, {"role": "assistant", "content": "<think> a b c d </think>"}, user],
    ]
    kept, counts = pdl.convert(rows, dolci_rows=[10, 11, 12, 13], count_tokens=lambda t: [len(s) for s in t],
                               max_response_tokens=20)  # fmt: skip
    assert kept == [{"prompt": "q", "response": "<think>a</think>b", "dolci_row": 10}]
    assert counts == {"selected": 4, "user_assistant": 3, "think": 2, "under_max_tokens": 1}
    table = pa.Table.from_pylist([{"messages": r["messages"] if isinstance(r, dict) else r} for r in rows])
    assert pdl.convert(table, dolci_rows=[10, 11, 12, 13], count_tokens=lambda t: [len(s) for s in t],
                       max_response_tokens=20) == (kept, counts)  # fmt: skip
    assert pdl.convert(rows)[1]["under_max_tokens"] == 2  # no tokenizer: no token filter


def test_token_threshold_counts_the_bos_the_post_processor_adds(tmp_path):
    tok_dir = write_tokenizer(tmp_path / "tok", truncate_at=4)
    count = pdl.token_counter(tok_dir, batch_size=2)
    assert count(["alpha beta", "alpha", "", "<think> a b </think>", "x " * 30]) == [3, 2, 1, 5, 31]
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    texts = [_think(np.random.default_rng(k), k, k) for k in range(3, 60)]
    assert count(texts) == [len(hf(t)["input_ids"]) for t in texts]

    # threshold-1 words + BOS = threshold tokens: not < threshold, dropped; threshold-2 words kept
    user = {"role": "user", "content": "q"}
    rows = [[user, {"role": "assistant", "content": _think(np.random.default_rng(0), k, k)}] for k in (9, 10, 11)]
    kept, counts = pdl.convert(rows, count_tokens=count, max_response_tokens=11)
    assert [len(r["response"].split()) for r in kept] == [9]
    assert counts["think"] == 3 and counts["under_max_tokens"] == 1


def test_errors_name_the_file_and_row(dolci, tmp_path):
    tok = str(dolci["tokenizer"])
    run = lambda source, *extra: pdl.main(["--source", str(source), "--tokenizer", tok, "--out", str(tmp_path / "o"),
                                           "--first", "10", "--val", "1", *extra])  # fmt: skip

    with pytest.raises(
        DataError, match=rf"{re.escape(str(dolci['shards'][0].parent))}: 5000 rows, fewer than --first 6000"
    ):
        run(dolci["shards"][0].parent, "--first", "6000")

    bad = tmp_path / "no_messages.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "response": ["b"]}), bad)
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}: no column 'messages'.*\['prompt', 'response'\]"):
        run(bad)

    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"messages": [["user: a", "assistant: b"]] * 20}), strings)
    with pytest.raises(
        DataError, match=rf"{re.escape(str(strings))}: column 'messages' is list<.*string>, not a list of"
    ):
        run(strings)

    # one row of one message, in the second shard: named by file and row within it
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}] * 30
    rows[25] = {"messages": [{"role": "user", "content": "q"}]}
    folder = tmp_path / "short"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:20]), folder / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[20:]), folder / "train-00001-of-00002.parquet")
    with pytest.raises(DataError, match=r"train-00001-of-00002\.parquet:row 5 \(dataset row 25\): 1 message"):
        run(folder, "--first", "30")
    rows[25] = {"messages": None}
    pq.write_table(pa.Table.from_pylist(rows[20:]), folder / "train-00001-of-00002.parquet")
    with pytest.raises(DataError, match=r"00002\.parquet:row 5 \(dataset row 25\): messages is NoneType, not a list"):
        run(folder, "--first", "30")

    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path / 'nothing'))}/tokenizer\.json: no such file"):
        pdl.main(["--source", str(folder), "--tokenizer", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    rows[25] = rows[0]  # all rows well formed, none with <think>: nothing left for the validation set
    pq.write_table(pa.Table.from_pylist(rows[20:]), folder / "train-00001-of-00002.parquet")
    with pytest.raises(
        DataError, match=rf"{re.escape(str(folder))}: 0 rows left after the filters, fewer than --val 1"
    ):
        run(folder, "--first", "30")
