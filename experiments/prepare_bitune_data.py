"""The Bitune authors' training sets as the JSONL rows this project's trainer reads (`data.template = "plain"`).

    python -m experiments.prepare_bitune_data TASK --source PATH --out DIR [--tokenizer DIR] [--max_len 512] \\
        [--val 1000] [--test_source PATH]

TASK is one of ultrafeedback | gsm8k | arc | csqa | piqa | siqa; a row `{"prompt": P, "response": R}` trained with
`data.template = "plain"` is the authors' example for it, character for character (`experiments/bitune_formats.py`).

`--source` is a local copy of the dataset: a `save_to_disk` directory (`datasets.load_from_disk`; a `DatasetDict`
gives its `train` split), one `.parquet` / `.jsonl` / `.jsonl.gz` / `.json` (JSON Lines, as `Dataset.to_json`
writes) file, or a folder of them. A folder is read like a Hub repository: it descends into the task's config
folder (`ARC-Challenge`, gsm8k's `main`) or `data/` or a `train/` folder when it has no data files of its own, and
when file names carry splits (`train-00000-of-00002.parquet`, `train.jsonl`) only the split read is kept; files
are read in name order. Row order is the dataset's: the most faithful copy of what the authors loaded is
`datasets.load_dataset(NAME[, CONFIG]).save_to_disk(PATH)`.

Written to `--out`:
  * `train.jsonl`: `{"prompt", "response", "source_row"}` per kept row, in dataset order; `source_row` is the row's
    index in the split read (as in `dataset["train"][i]`), counting every file in order;
  * `val.jsonl` (ultrafeedback): the authors' validation set (`val_subset=1000`), the LAST `--val` rows left after
    the gpt-4 and length filters; `train.jsonl` holds the rest;
  * `test.jsonl` (gsm8k with `--test_source`): `{"question", "answer"}` rows of the test split, unfiltered (the
    authors validate GSM8K on the test split; this is the layout the GSM8K evaluation reads);
  * `manifest.json`: the counts (read, after the gpt-4 filter, after the length filter, train, val), the task, the
    authors' functions verbatim, the trainer's template and the sha256 of every output file.

The length filter uses the trainer's own tokenization (`tokenize_records(..., truncation="drop",
template="plain")`, whose drop rule is prompt + answer > max_len), so a row kept here is never dropped at train
time. UltraFeedback needs it (`--tokenizer`, a Hugging Face tokenizer directory) because the validation rows are
the last ones after it; for the other tasks the trainer's `truncation = "drop"` applies the same filter when it
reads the file, and `--tokenizer` only makes this script apply it (and count it) first.

A row whose prompt or response is blank after the authors' filters (the trainer refuses blank text) is left out
after the split, so the split stays the authors'; the manifest counts them. Errors name the file and the row
(`file:row i`, rows counted from 0 in each file) and the missing column or field.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import pathlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bitune_jax.data.hf_datasets import TableRecord
from bitune_jax.data.records import DataError, jsonl_rows
from bitune_jax.data.tokenize import PLAIN_PROMPT
from experiments.bitune_formats import (
    AUTHORS_SOURCE,
    TASKS,
    _check_row,
    _task,
    authors_keep,
    authors_prompt_response,
)

AUTHORS = "dkopi/Bitune@7beb9f1 dataloaders.py (create_dataloaders, prepare_datasets)"
MAX_LEN = 512  # the authors' seq_length
VAL_SUBSET = 1000  # the authors' val_subset for UltraFeedback
SPLITS = ("train", "validation", "test", "dev", "val")
DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json")
_SPLIT_FILE = re.compile(
    r"^(?P<split>[A-Za-z]+)(?:-\d+-of-\d+(?:-[0-9a-f]+)?)?(?P<ext>\.parquet|\.jsonl|\.jsonl\.gz|\.json)$"
)

# ---------------------------------------------------------------------------------------------------------------------
# Reading a local copy of a split.


@dataclasses.dataclass(frozen=True)
class SourceRow:
    file: str
    row: int  # 0-based row within `file`
    index: int  # 0-based row within the split (all files in order)
    data: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.file}:row {self.row}"


def _data_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(DATA_SUFFIXES))


def _is_saved(path: pathlib.Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def resolve_source(path: str | pathlib.Path, task: str, split: str = "train") -> list[pathlib.Path]:
    """The files (or the one `save_to_disk` directory) holding `split` of `task`'s dataset at `path`."""
    spec, root = _task(task), pathlib.Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset file or directory")
    folder = root
    for _ in range(4):  # e.g. ai2_arc/ARC-Challenge/train/0000.parquet (the Hub's parquet conversion)
        if folder.is_file() or _is_saved(folder) or _data_files(folder):
            break
        subdirs = {p.name: p for p in folder.iterdir() if p.is_dir()}
        pick = next((subdirs[n] for n in (spec.config, "default", "data", split) if n and n in subdirs), None)
        if pick is None and len(subdirs) == 1:  # e.g. piqa's parquet conversion: plain_text/train/0000.parquet
            (pick,) = subdirs.values()
        if pick is None:
            raise DataError(
                f"{folder}: no data files ({', '.join(DATA_SUFFIXES)}), no save_to_disk directory, and no "
                f"folder {spec.config or 'data'!r} or {split!r} to look in; it holds {sorted(subdirs)}"
            )
        folder = pick
    if folder.is_file() or _is_saved(folder):
        files = [folder]
        m = _SPLIT_FILE.match(folder.name) if folder.is_file() else None
        if m and m["split"] in SPLITS and m["split"] != split:
            raise DataError(f"{folder}: a {m['split']!r} file, but {task} is read from its {split!r} split here")
    else:
        files = _data_files(folder)
        if not files:
            raise DataError(f"{folder}: no data files ({', '.join(DATA_SUFFIXES)})")
        named = {f: m["split"] for f in files if (m := _SPLIT_FILE.match(f.name)) and m["split"] in SPLITS}
        if named:
            files = [f for f in files if named.get(f) == split]
            if not files:
                raise DataError(f"{folder}: no {split!r} files; its files are of splits {sorted(set(named.values()))}")
    for f in files:
        if f.is_file() and not f.name.endswith(DATA_SUFFIXES):
            raise DataError(f"{f}: not a {', '.join(DATA_SUFFIXES)} file or a save_to_disk directory")
        wrong = [c for c in spec.wrong_configs if c in f.resolve().parts]
        if wrong:
            raise DataError(f"{f}: this is the {wrong[0]} config; the authors train {task} on {spec.config}")
    return files


def _table_rows(name: str, table: Any, columns: Sequence[str], task: str) -> list[dict[str, Any]]:
    """The rows of a pyarrow table, only `columns` (UltraFeedback's completions cut to `model` and `response`)."""
    import pyarrow as pa

    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{name}: no column {missing[0]!r} ({task} reads {list(columns)}); the columns are {table.column_names}"
        )
    values = {}
    for c in columns:
        col = table.column(c)
        if task == "ultrafeedback" and c == "completions":
            element = col.type.value_type if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) else None
            if element is None or not pa.types.is_struct(element):
                raise DataError(f"{name}: column 'completions' must be a list of structs, got {col.type}")
            fields = [element.field(i).name for i in range(element.num_fields)]
            for need in ("model", "response"):
                if need not in fields:
                    raise DataError(f"{name}: column 'completions' has no field {need!r}; its fields are {fields}")
            keep = pa.struct([element.field("model"), element.field("response")])
            col = col.cast(pa.large_list(keep) if pa.types.is_large_list(col.type) else pa.list_(keep))
        values[c] = col.to_pylist()
    return [dict(zip(columns, v)) for v in zip(*(values[c] for c in columns))]


def read_split(path: str | pathlib.Path, task: str, split: str = "train") -> list[SourceRow]:
    """Every row of `split` at `path` (the columns `task` reads), in order. A table missing a column fails
    before any row is read, naming the file."""
    columns = list(_task(task).columns)
    rows: list[SourceRow] = []
    for f in resolve_source(path, task, split):
        name = str(f)
        if f.is_dir():
            import datasets

            ds = datasets.load_from_disk(str(f))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{f}: no split {split!r}; the splits are {sorted(ds)}")
                ds, name = ds[split], str(f / split)
            missing = [c for c in columns if c not in ds.column_names]
            if missing:
                raise DataError(
                    f"{name}: no column {missing[0]!r} ({task} reads {columns}); the columns are {ds.column_names}"
                )
            data = _table_rows(name, ds.select_columns(columns).with_format("arrow")[:], columns, task)
        elif f.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                names = pq.read_schema(f).names
            except (OSError, ValueError) as e:
                raise DataError(f"{f}: not a readable Parquet file ({e})") from None
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{f}: no column {missing[0]!r} ({task} reads {columns}); the columns are {names}")
            data = _table_rows(name, pq.read_table(f, columns=columns), columns, task)
        else:
            data = [row for _, _, row in jsonl_rows(f)]
        rows += [SourceRow(name, i, len(rows) + i, d) for i, d in enumerate(data)]
    if not rows:
        raise DataError(f"{path}: no rows in the {split!r} split")
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# The whole set.


@dataclasses.dataclass(frozen=True)
class Example:
    source: SourceRow
    prompt: str
    response: str

    def row(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "response": self.response, "source_row": self.source.index}


def length_filter(
    examples: Sequence[Example], tok: Any, max_len: int
) -> tuple[list[Example], Any]:  # (kept, TruncationReport)
    """The trainer's own drop rule (`tokenize_records(..., truncation="drop", template="plain")`: prompt + answer
    tokens > max_len), which is the authors' "the last of the first 512 tokens is EOS"."""
    from bitune_jax.data.tokenize import tokenize_records

    records = [
        TableRecord(
            messages=[{"role": "user", "content": e.prompt}, {"role": "assistant", "content": e.response}],
            file=e.source.file,
            line=e.source.row,
        )
        for e in examples
    ]
    wheres = [r.where for r in records]
    assert len(set(wheres)) == len(wheres), "two rows with one file:row"
    tokenized, report = tokenize_records(records, tok, max_len=max_len, truncation="drop", template="plain")
    kept_where = {t.source for t in tokenized}
    kept = [e for e, w in zip(examples, wheres) if w in kept_where]
    assert len(kept) == report.kept == len(tokenized), (len(kept), report.kept, len(tokenized))
    return kept, report


def _write_jsonl(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(data)
    return {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def _blank(e: Example) -> bool:
    return not e.prompt.strip() or not e.response.strip()


def prepare(
    task: str,
    source: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    tokenizer: str | pathlib.Path | None = None,
    max_len: int = MAX_LEN,
    val: int | None = None,
    test_source: str | pathlib.Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write `out/train.jsonl` (and `val.jsonl`, `test.jsonl`) and `out/manifest.json`; return the manifest."""
    spec = _task(task)
    if task == "ultrafeedback":
        if tokenizer is None:
            raise ValueError(
                "ultrafeedback needs --tokenizer: the authors' validation set is the last rows after the "
                f"{max_len}-token filter, which depends on the tokenizer"
            )
        val = VAL_SUBSET if val is None else val
        if val < 0:
            raise ValueError(f"--val must be >= 0, got {val}")
    elif val is not None:
        raise ValueError(f"--val is UltraFeedback's held-out count; the authors validate {task} on {spec.validation}")
    if test_source is not None and task != "gsm8k":
        raise ValueError(f"--test_source is for gsm8k (its test split); {task} has none here")
    if max_len < 2:
        raise ValueError(f"--max_len must be >= 2, got {max_len}")

    rows = read_split(source, task, "train")
    examples, no_gpt4 = [], 0
    for r in rows:
        kept = authors_keep(task, r.data, r.where)
        if kept is None:
            no_gpt4 += 1
            continue
        prompt, response = authors_prompt_response(task, kept, r.where)
        examples.append(Example(r, prompt, response))
    counts: dict[str, Any] = {
        "read": len(rows),
        "after_gpt4": len(examples) if task == "ultrafeedback" else None,
        "after_length": None,
    }
    gpt4 = f", {len(examples)} with a gpt-4 completion" if task == "ultrafeedback" else ""
    log(f"{task}: read {len(rows)} rows from {source}{gpt4}")

    report = None
    if tokenizer is not None:
        from bitune_jax.tokenizer import load_hf_tokenizer

        tok = load_hf_tokenizer(tokenizer)
        log(f"{task}: tokenizing {len(examples)} rows with {tokenizer} (max_len={max_len}) ...")
        examples, report = length_filter(examples, tok, max_len)
        counts["after_length"] = len(examples)
        log(f"{task}: {report.summary()}")

    held: list[Example] = []
    if task == "ultrafeedback":
        if len(examples) <= val:
            raise DataError(f"{source}: {len(examples)} rows left after the filters, not more than --val={val}")
        examples, held = examples[: len(examples) - val], examples[len(examples) - val :]
    blank = {"train": sum(map(_blank, examples)), "val": sum(map(_blank, held))}
    for e in [e for e in examples + held if _blank(e)][:5]:
        log(f"{task}: leaving out {e.source.where}: blank prompt or response (the trainer refuses blank text)")
    examples, held = [e for e in examples if not _blank(e)], [e for e in held if not _blank(e)]
    if not examples:
        raise DataError(f"{source}: no training rows left after the filters")
    counts.update(train=len(examples), val=len(held) if task == "ultrafeedback" else None, blank_dropped=blank)

    test_rows = None
    if test_source is not None:  # read and checked before anything is written
        test = read_split(test_source, task, "test")
        for r in test:
            _check_row(task, r.data, r.where)
        test_rows = [{"question": r.data["question"], "answer": r.data["answer"]} for r in test]
        counts["test"] = len(test_rows)

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"train.jsonl": [e.row() for e in examples]}
    if task == "ultrafeedback" and val:
        files["val.jsonl"] = [e.row() for e in held]
    if test_rows is not None:
        files["test.jsonl"] = test_rows
    outputs = {name: _write_jsonl(out / name, rows) for name, rows in files.items()}
    for stale in ("val.jsonl", "test.jsonl"):
        if stale not in outputs:  # from an earlier run into this directory: the manifest lists what this run wrote
            (out / stale).unlink(missing_ok=True)

    manifest = {
        "task": task,
        "authors": AUTHORS,
        "dataset": {"hub": spec.hub, "config": spec.config, "split": "train", "validation": spec.validation},
        "source": str(source),
        "source_files": [str(f) for f in resolve_source(source, task, "train")],
        "test_source": None if test_source is None else str(test_source),
        "tokenizer": None if tokenizer is None else str(tokenizer),
        "max_len": max_len,
        "length_filter": None
        if report is None
        else {
            "rule": "tokenize_records(..., truncation='drop', template='plain'): drop prompt + answer > max_len",
            "summary": report.summary(),
        },
        "val": val if task == "ultrafeedback" else None,
        "counts": counts,
        "authors_functions": AUTHORS_SOURCE[task],
        "trainer_template": {
            "data.template": "plain",
            "prompt": PLAIN_PROMPT.replace("{instruction}", "{prompt}"),
            "answer": '" " + {response} + EOS',
        },
        "outputs": outputs,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log(f"{task}: wrote " + ", ".join(f"{out / k} ({v['rows']} rows)" for k, v in outputs.items()))
    return manifest


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.prepare_bitune_data",
        description="The Bitune authors' training data as JSONL for data.template='plain'.",
    )
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--source", required=True, help="a local copy of the dataset (see the module docstring)")
    parser.add_argument("--out", required=True, help="the output directory")
    parser.add_argument(
        "--tokenizer", default=None, help="a Hugging Face tokenizer directory (ultrafeedback: required)"
    )
    parser.add_argument("--max_len", type=int, default=MAX_LEN)
    parser.add_argument("--val", type=int, default=None, help=f"ultrafeedback: held-out rows (default {VAL_SUBSET})")
    parser.add_argument("--test_source", default=None, help="gsm8k: a local copy of the test split")
    args = parser.parse_args(argv)
    try:
        return prepare(
            args.task,
            args.source,
            args.out,
            tokenizer=args.tokenizer,
            max_len=args.max_len,
            val=args.val,
            test_source=args.test_source,
        )
    except (DataError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"prepare_bitune_data: error: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
