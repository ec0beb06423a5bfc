"""`experiments.prepare_bitune_data`: the Bitune authors' training sets as plain-template JSONL.

Every row is checked against the authors' own functions, copied below from dkopi/Bitune@7beb9f1 `dataloaders.py`
(`create_dataloaders`) unchanged, `tokenizer.eos_token` included: the plain template's prompt text
`"Question: " + prompt + "\\n\\nAnswer:"` must be their `q_func(row)`, and `" " + response` + EOS their
`ans_func(row)`. UltraFeedback's gpt-4 filter, 512-token (here: small) length filter and last-rows validation set
are checked with a tiny tokenizer trained here.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenizers

from bitune_jax.data.records import DataError, read_jsonl
from bitune_jax.data.tokenize import PLAIN_PROMPT, encode_record, tokenize_records
from bitune_jax.tokenizer import Tokenizer, load_hf_tokenizer
from experiments import bitune_formats as formats
from experiments import prepare_bitune_data as pbd

REPO = pathlib.Path(__file__).resolve().parents[2]
EOS = "<|im_end|>"
tokenizer = types.SimpleNamespace(eos_token=EOS)  # the name the authors' lambdas read

# fmt: off
# dkopi/Bitune@7beb9f1 dataloaders.py, create_dataloaders: (q_func, ans_func) of each dataset, copied unchanged.
AUTHORS = {
    "csqa": (
        lambda x: f"Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}{chr(10).join(x['choices']['text'])}{chr(10)}{chr(10)}Answer:",  # noqa: E501
        lambda x: " "
        + x["choices"]["text"][x["choices"]["label"].index(x["answerKey"])]
        + tokenizer.eos_token,
    ),
    "arc": (
        lambda x: f"Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}{chr(10).join(x['choices']['text'])}{chr(10)}{chr(10)}Answer:",  # noqa: E501
        lambda x: " "
        + x["choices"]["text"][x["choices"]["label"].index(x["answerKey"])]
        + tokenizer.eos_token,
    ),
    "piqa": (
        lambda x: f"Question: {x['goal']}{chr(10)}{chr(10)}Choices:{chr(10)}{x['sol1']}{chr(10)}{x['sol2']}{chr(10)}{chr(10)}Answer:",  # noqa: E501
        lambda x: " "
        + (x["sol1"] if x["label"] == 0 else x["sol2"])
        + tokenizer.eos_token,
    ),
    "siqa": (
        lambda x: f"Question: Given the context, answer correctly the question.{chr(10)}Context: {x['context']}{chr(10)}Question: {x['question']}{chr(10)}{chr(10)}Choices:{chr(10)}(0) {x['answerA']}{chr(10)}(1) {x['answerB']}{chr(10)}(2) {x['answerC']}{chr(10)}{chr(10)}Answer:",  # noqa: E501
        lambda x: " " + f"({int(x['label']) - 1})" + tokenizer.eos_token,
    ),
    "ultrafeedback": (
        lambda x: f"Question: {x['instruction']}{chr(10)}{chr(10)}Answer:",
        lambda x: " " + x["completions"][0]["response"] + tokenizer.eos_token,
    ),
    "gsm8k": (
        lambda x: f"Question: {x['question']}\n\nAnswer:",
        lambda x: " " + x["answer"] + tokenizer.eos_token,
    ),
}
# fmt: on


def authors_filter(row: dict) -> dict | None:
    """UltraFeedback's `_filter`: keep the gpt-4 completions, drop a row with none."""
    completions = [c for c in row["completions"] if c["model"] == "gpt-4"]
    return {**row, "completions": completions} if len(completions) > 0 else None


def completion(model: str, response: str) -> dict:
    return {
        "model": model,
        "response": response,
        "critique": "Fine.",
        "overall_score": 7.5,
        "annotations": {"helpfulness": {"Rating": "4", "Rationale": "ok"}},
    }


# Rows in each dataset's own columns (the Hub's), with text that would trip a naive renderer: braces, newlines,
# non-ASCII, leading/trailing spaces, numeric ARC labels.
ROWS = {
    "gsm8k": [
        {
            "question": "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many?",
            "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
        },
        {"question": "Weng earns $12 {per hour}. Café?\nHow much", "answer": "12 * 50 = 600\n#### 10"},
    ],
    "arc": [
        {
            "id": "Mercury_1",
            "question": "Which property of a mineral can be determined just by looking at it?",
            "choices": {"text": ["luster", "mass", "weight", "hardness"], "label": ["A", "B", "C", "D"]},
            "answerKey": "A",
        },
        {
            "id": "NYSEDREGENTS_2",
            "question": "A student {x} mixes two liquids.",
            "choices": {"text": ["heat", " light ", "sound"], "label": ["1", "2", "3"]},
            "answerKey": "2",
        },
    ],
    "csqa": [
        {
            "id": "075e483d",
            "question": "The sanctions against the school were a punishing blow, and they seemed to what?",
            "question_concept": "punishing",
            "choices": {
                "label": ["A", "B", "C", "D", "E"],
                "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"],
            },
            "answerKey": "A",
        },
        {
            "id": "61fe6e87",
            "question": "Sammy wanted to go to where the people were. Where might he go?",
            "question_concept": "people",
            "choices": {
                "label": ["A", "B", "C", "D", "E"],
                "text": ["race track", "populated areas", "the desert", "apartment", "roadblock"],
            },
            "answerKey": "B",
        },
    ],
    "piqa": [
        {
            "goal": "When boiling butter, when it's ready, you can",
            "sol1": "Pour it onto a plate",
            "sol2": "Pour it into a jar",
            "label": 1,
        },  # noqa: E501
        {"goal": "To make {a} sandwich\ncrisp", "sol1": "Toast the bread.", "sol2": "Freeze the bread.", "label": 0},
    ],
    "siqa": [
        {
            "context": "Cameron decided to have a barbecue and gathered her friends together.",
            "question": "How would Others feel as a result?",
            "answerA": "like attending",
            "answerB": "like staying home",
            "answerC": "a good friend to have",
            "label": "1",
        },
        {
            "context": "Jan needed to give out jobs for an upcoming project at work.",
            "question": "What will Others want to do next?",
            "answerA": "disagree with Jan",
            "answerB": "get to work",
            "answerC": "argue with the assignments",
            "label": "3",
        },
    ],
    "ultrafeedback": [
        {
            "source": "evol_instruct",
            "instruction": "Name the capital of France {briefly}.\nOne word.",
            "models": ["alpaca-7b", "gpt-4"],
            "completions": [completion("alpaca-7b", "paris"), completion("gpt-4", "Paris.\n\nIt is on the Seine.")],
        },
        {
            "source": "flan",
            "instruction": "Translate 'chat' to English.",
            "models": ["gpt-4", "gpt-3.5-turbo"],
            "completions": [completion("gpt-4", "Cat."), completion("gpt-3.5-turbo", "cat")],
        },
    ],
}
TASKS = list(formats.TASKS)


def write_parquet(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_out(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny byte-level BPE tokenizer that adds BOS (like Gemma, whose BOS the authors' length counts)."""
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    corpus = [json.dumps(r) for rows in ROWS.values() for r in rows] + ["Question: \n\nChoices:\n\n\nAnswer: two"] * 4
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=["<unk>", "<s>", EOS],
        show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    directory = tmp_path_factory.mktemp("tok")
    Tokenizer(
        backend=backend, bos_id=1, eos_ids=(2,), add_bos=True, special_tokens={"bos_token": "<s>", "eos_token": EOS}
    ).save_hf(directory)
    return directory


@pytest.fixture(scope="module")
def tok(tok_dir) -> Tokenizer:
    tok = load_hf_tokenizer(tok_dir)
    assert tok.add_bos and tok.bos_id == 1 and tok.eos_ids == (2,)
    return tok


def authors_length(tok: Tokenizer, row: dict, task: str = "ultrafeedback") -> int:
    """The authors' `len(tokenizer(q_func(row) + ans_func(row)))`, untruncated (BOS included)."""
    q, ans = AUTHORS[task]
    return len(tok.encode(q(row) + ans(row)))


@pytest.mark.parametrize("task", TASKS)
def test_rows_are_the_authors_text(task, tmp_path, tok, tok_dir):
    rows = ROWS[task]
    # the pure functions, no files
    for row in rows:
        authors_row = authors_filter(row) if task == "ultrafeedback" else row
        q, ans = AUTHORS[task][0](authors_row), AUTHORS[task][1](authors_row)
        assert formats.authors_text(task, row) == (q, ans.removesuffix(EOS))
        prompt, response = formats.authors_prompt_response(task, row)
        assert "Question: " + prompt + "\n\nAnswer:" == PLAIN_PROMPT.format(instruction=prompt) == q
        assert " " + response + EOS == ans

    # through a file in the Hub's layout, the script, and the trainer's own reader and tokenization
    source = write_parquet(tmp_path / "src" / "train-00000-of-00001.parquet", rows)
    kwargs = {"tokenizer": tok_dir, "val": 1} if task == "ultrafeedback" else {}
    manifest = pbd.prepare(task, source.parent, tmp_path / "out", log=lambda _: None, **kwargs)
    written = read_out(tmp_path / "out" / "train.jsonl")
    if task == "ultrafeedback":
        written += read_out(tmp_path / "out" / "val.jsonl")
    assert [w["source_row"] for w in written] == list(range(len(rows)))
    assert manifest["counts"]["read"] == len(rows)
    for w in written:
        assert set(w) == {"prompt", "response", "source_row"}
        row = rows[w["source_row"]]
        authors_row = authors_filter(row) if task == "ultrafeedback" else row
        q, ans = AUTHORS[task][0](authors_row), AUTHORS[task][1](authors_row)
        assert "Question: " + w["prompt"] + "\n\nAnswer:" == q
        assert " " + w["response"] + EOS == ans

    files = [tmp_path / "out" / n for n in ("train.jsonl", "val.jsonl") if (tmp_path / "out" / n).exists()]
    records = [r for f in files for r in read_jsonl(f)]
    for rec, w in zip(records, written, strict=True):
        authors_row = authors_filter(rows[w["source_row"]]) if task == "ultrafeedback" else rows[w["source_row"]]
        q, ans = AUTHORS[task][0](authors_row), AUTHORS[task][1](authors_row)
        prompt_ids, answer_ids = encode_record(tok, rec, "plain")
        assert prompt_ids[0] == tok.bos_id and answer_ids[-1] == tok.eos_ids[0]
        assert tok.decode(prompt_ids[1:], skip_special=False) == q  # the prompt/answer boundary is the authors'
        assert tok.decode(prompt_ids[1:] + answer_ids, skip_special=False) == q + ans
        assert len(prompt_ids) + len(answer_ids) == authors_length(tok, authors_row, task)


@pytest.mark.parametrize("task", TASKS)
def test_manifest_functions_are_the_ones_run(task):
    """The manifest's verbatim source of the authors' functions computes what `authors_text` computes."""
    src = formats.AUTHORS_SOURCE[task]
    q_func = eval(src["q_func"], {"chr": chr, "int": int, "tokenizer": tokenizer})
    ans_func = eval(src["ans_func"], {"chr": chr, "int": int, "tokenizer": tokenizer})
    for row in ROWS[task]:
        authors_row = authors_filter(row) if task == "ultrafeedback" else row
        assert (q_func(authors_row), ans_func(authors_row)) == (
            AUTHORS[task][0](authors_row),
            AUTHORS[task][1](authors_row),
        )  # noqa: E501
        assert formats.authors_text(task, row) == (q_func(authors_row), ans_func(authors_row).removesuffix(EOS))


def test_ultrafeedback_keeps_the_first_gpt4_completion(tmp_path, tok_dir):
    rows = [
        {"instruction": "A?", "completions": [completion("alpaca-7b", "no"), completion("gpt-4", "G0")]},
        {"instruction": "B?", "completions": [completion("llama-2-7b-chat", "x"), completion("gpt-4-turbo", "y")]},
        {"instruction": "C?", "completions": []},
        {
            "instruction": "D?",
            "completions": [completion("gpt-4", "first"), completion("gpt-3.5-turbo", "z"), completion("gpt-4", "2nd")],
        },
        {"instruction": "E?", "completions": [completion("gpt-3.5-turbo", "w"), completion("gpt-4", "G4")]},
    ]
    assert (
        formats.authors_keep("ultrafeedback", rows[1]) is None
        and formats.authors_keep("ultrafeedback", rows[2]) is None
    )
    with pytest.raises(DataError, match="no gpt-4 completion"):
        formats.authors_text("ultrafeedback", rows[2], "f.parquet:row 2")
    source = write_parquet(tmp_path / "uf.parquet", rows)
    m = pbd.prepare("ultrafeedback", source, tmp_path / "out", tokenizer=tok_dir, val=1, log=lambda _: None)
    train, val = read_out(tmp_path / "out" / "train.jsonl"), read_out(tmp_path / "out" / "val.jsonl")
    assert [(r["source_row"], r["prompt"], r["response"]) for r in train] == [(0, "A?", "G0"), (3, "D?", "first")]
    assert [(r["source_row"], r["prompt"], r["response"]) for r in val] == [(4, "E?", "G4")]
    assert m["counts"] == {
        "read": 5,
        "after_gpt4": 3,
        "after_length": 3,
        "train": 2,
        "val": 1,
        "blank_dropped": {"train": 0, "val": 0},
    }
    # --val 0: no validation file; one left by an earlier run into the same directory is removed
    m = pbd.prepare("ultrafeedback", source, tmp_path / "out", tokenizer=tok_dir, val=0, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "train.jsonl"]
    assert list(m["outputs"]) == ["train.jsonl"] and (m["counts"]["train"], m["counts"]["val"]) == (3, 0)


def test_ultrafeedback_length_filter_and_validation_split(tmp_path, tok, tok_dir):
    order = [5, 1, 9, 12, 3, 7, 2, 11, 6, 10, 4, 8]  # "!" counts (one token each), unsorted: kept is no prefix
    rows = [
        {
            "instruction": f"Count the stickers, case {i}.",
            "completions": [completion("alpaca-7b", "short"), completion("gpt-4", "Stickers" + "!" * k)],
        }
        for i, k in enumerate(order)
    ]
    lengths = [authors_length(tok, authors_filter(r)) for r in rows]
    max_len = lengths[order.index(6)]
    assert max_len in lengths and max_len + 1 in lengths, lengths  # the boundary is exercised on both sides
    kept = [i for i, n in enumerate(lengths) if n <= max_len]
    assert 3 < len(kept) < len(rows)

    source = write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    m = pbd.main(
        ["ultrafeedback", "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--tokenizer", str(tok_dir)]
        + ["--max_len", str(max_len), "--val", "2"]
    )
    train, val = read_out(tmp_path / "out" / "train.jsonl"), read_out(tmp_path / "out" / "val.jsonl")
    assert [r["source_row"] for r in val] == kept[-2:]  # the authors' val_subset: the LAST rows after the filter
    assert [r["source_row"] for r in train] == kept[:-2]
    assert m["counts"] == {
        "read": len(rows),
        "after_gpt4": len(rows),
        "after_length": len(kept),
        "train": len(kept) - 2,
        "val": 2,
        "blank_dropped": {"train": 0, "val": 0},
    }
    assert m["source_files"] == [str(source)] and m["max_len"] == max_len
    # the trainer, reading what was written with the same max_len, drops nothing more
    for name in ("train.jsonl", "val.jsonl"):
        _, report = tokenize_records(
            read_jsonl(tmp_path / "out" / name), tok, max_len=max_len, truncation="drop", template="plain"
        )
        assert report.dropped == 0


def test_ultrafeedback_blank_rows_leave_after_the_split(tmp_path, tok_dir):
    rows = [
        {"instruction": f"Q{i}?", "completions": [completion("gpt-4", text)]}
        for i, text in enumerate(["a", "", "c", "d"])
    ]
    source = write_parquet(tmp_path / "uf.parquet", rows)
    m = pbd.prepare("ultrafeedback", source, tmp_path / "out", tokenizer=tok_dir, val=1, log=lambda _: None)
    assert [r["source_row"] for r in read_out(tmp_path / "out" / "train.jsonl")] == [0, 2]
    assert [r["source_row"] for r in read_out(tmp_path / "out" / "val.jsonl")] == [3]
    assert m["counts"]["blank_dropped"] == {"train": 1, "val": 0} and m["counts"]["train"] == 2


def test_cli_end_to_end_on_parquet(tmp_path):
    """`python -m experiments.prepare_bitune_data piqa` on a Hub-style folder: only the train shard is read."""
    src = tmp_path / "piqa"
    write_parquet(src / "train-00000-of-00001.parquet", ROWS["piqa"])
    write_parquet(src / "validation-00000-of-00001.parquet", ROWS["piqa"][:1])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "experiments.prepare_bitune_data", "piqa", "--source", str(src), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "piqa"
    assert manifest["counts"] == {
        "read": 2,
        "after_gpt4": None,
        "after_length": None,
        "train": 2,
        "val": None,
        "blank_dropped": {"train": 0, "val": 0},
    }
    assert manifest["source_files"] == [str(src / "train-00000-of-00001.parquet")]
    assert manifest["authors_functions"] == formats.AUTHORS_SOURCE["piqa"]
    data = (out / "train.jsonl").read_bytes()
    assert manifest["outputs"] == {"train.jsonl": {"rows": 2, "sha256": hashlib.sha256(data).hexdigest()}}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train.jsonl"]
    assert [r["response"] for r in read_out(out / "train.jsonl")] == ["Pour it into a jar", "Toast the bread."]


def test_gsm8k_with_test_split_and_tokenizer(tmp_path, tok_dir):
    root = tmp_path / "gsm8k"  # the Hub repository: main/ and socratic/ configs
    write_parquet(root / "main" / "train-00000-of-00001.parquet", ROWS["gsm8k"])
    write_parquet(root / "main" / "test-00000-of-00001.parquet", ROWS["gsm8k"][:1])
    write_parquet(root / "socratic" / "train-00000-of-00001.parquet", ROWS["gsm8k"][:1])
    out = tmp_path / "out"
    m = pbd.main(
        ["gsm8k", "--source", str(root), "--out", str(out), "--tokenizer", str(tok_dir), "--test_source", str(root)]
    )
    assert m["counts"] == {
        "read": 2,
        "after_gpt4": None,
        "after_length": 2,
        "train": 2,
        "val": None,
        "blank_dropped": {"train": 0, "val": 0},
        "test": 1,
    }
    assert read_out(out / "test.jsonl") == [
        {"question": ROWS["gsm8k"][0]["question"], "answer": ROWS["gsm8k"][0]["answer"]}
    ]  # noqa: E501
    assert m["outputs"]["test.jsonl"]["sha256"] == hashlib.sha256((out / "test.jsonl").read_bytes()).hexdigest()
    with pytest.raises(DataError, match="socratic config"):
        pbd.prepare("gsm8k", root / "socratic", tmp_path / "x", log=lambda _: None)


def test_arc_reads_the_challenge_config_train_split(tmp_path):
    root = tmp_path / "ai2_arc"
    write_parquet(root / "ARC-Challenge" / "train-00000-of-00001.parquet", ROWS["arc"])
    write_parquet(root / "ARC-Challenge" / "validation-00000-of-00001.parquet", ROWS["arc"][:1])
    write_parquet(root / "ARC-Easy" / "train-00000-of-00001.parquet", ROWS["arc"][:1])
    for source in (root, root / "ARC-Challenge", root / "ARC-Challenge" / "train-00000-of-00001.parquet"):
        m = pbd.prepare("arc", source, tmp_path / "out", log=lambda _: None)
        assert m["source_files"] == [str(root / "ARC-Challenge" / "train-00000-of-00001.parquet")]
        assert [r["response"] for r in read_out(tmp_path / "out" / "train.jsonl")] == ["luster", " light "]
    with pytest.raises(DataError, match="ARC-Easy config"):
        pbd.prepare("arc", root / "ARC-Easy", tmp_path / "x", log=lambda _: None)


def test_parquet_conversion_layout_and_split_guard(tmp_path):
    root = tmp_path / "piqa"  # the Hub's parquet conversion: <config>/<split>/0000.parquet
    write_parquet(root / "plain_text" / "train" / "0000.parquet", ROWS["piqa"])
    write_parquet(root / "plain_text" / "validation" / "0000.parquet", ROWS["piqa"][:1])
    m = pbd.prepare("piqa", root, tmp_path / "out", log=lambda _: None)
    assert m["source_files"] == [str(root / "plain_text" / "train" / "0000.parquet")] and m["counts"]["train"] == 2
    shard = write_parquet(tmp_path / "hub" / "validation-00000-of-00001.parquet", ROWS["piqa"])
    with pytest.raises(DataError, match="a 'validation' file, but piqa is read from its 'train' split"):
        pbd.prepare("piqa", shard, tmp_path / "x", log=lambda _: None)
    with pytest.raises(DataError, match="no 'train' files; its files are of splits \\['validation'\\]"):
        pbd.prepare("piqa", shard.parent, tmp_path / "x", log=lambda _: None)


def test_save_to_disk_and_jsonl_sources(tmp_path):
    import datasets

    rows = ROWS["csqa"]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "validation": datasets.Dataset.from_list(rows[:1])}
    ).save_to_disk(str(tmp_path / "saved"))
    m = pbd.prepare("csqa", tmp_path / "saved", tmp_path / "a", log=lambda _: None)
    assert m["counts"]["train"] == 2
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pbd.prepare("csqa", tmp_path / "rows.jsonl", tmp_path / "b", log=lambda _: None)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


def test_missing_column_names_the_file_and_row(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "answerC"} for r in ROWS["siqa"]]
    source = write_parquet(tmp_path / "siqa.parquet", rows)
    with pytest.raises(SystemExit) as e:
        pbd.main(["siqa", "--source", str(source), "--out", str(tmp_path / "out")])
    assert f"{source}: no column 'answerC'" in str(e.value.code)
    assert not (tmp_path / "out").exists()

    bad = [ROWS["csqa"][0], {k: v for k, v in ROWS["csqa"][1].items() if k != "answerKey"}]
    (tmp_path / "csqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(DataError, match=rf"{tmp_path / 'csqa.jsonl'}:row 1: missing field 'answerKey'"):
        pbd.prepare("csqa", tmp_path / "csqa.jsonl", tmp_path / "out", log=lambda _: None)
    row = {**ROWS["arc"][0], "answerKey": "E"}
    with pytest.raises(DataError, match=r"f\.parquet:row 7: answerKey 'E' is not one of the choice labels"):
        formats.authors_text("arc", row, "f.parquet:row 7")


def test_ultrafeedback_argument_errors(tmp_path, tok_dir):
    source = write_parquet(tmp_path / "uf.parquet", ROWS["ultrafeedback"])
    with pytest.raises(SystemExit, match="needs --tokenizer"):
        pbd.main(["ultrafeedback", "--source", str(source), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="2 rows left after the filters, not more than --val=1000"):
        pbd.main(["ultrafeedback", "--source", str(source), "--out", str(tmp_path / "o"), "--tokenizer", str(tok_dir)])
    with pytest.raises(SystemExit, match="--val is UltraFeedback's"):
        pbd.main(["piqa", "--source", str(source), "--out", str(tmp_path / "o"), "--val", "5"])
