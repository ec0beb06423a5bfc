"""Training rows from Hugging Face `datasets` directories and Parquet files, beside the JSONL reader.

`path` is one of:
  * a directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (`split` picks one), read with
    `datasets.load_from_disk` (memory-mapped Arrow, nothing downloaded);
  * a `.parquet` file, or a folder of `.parquet` shards read in name order, with pyarrow alone; when the shards are
    Hub-style `<split>-00000-of-00002.parquet` of several splits, only `split`'s are read.
Rows become `Record`s by the JSONL rules (`records.record_from_row`): a chat column (`messages`: a list of
`{role, content}` ending with the assistant) or a prompt and a response column, under configurable names. The chat
column wins when the table has it (pass `messages=""` to read the pair columns instead); in the pair format a
`system` column is the system prompt (null: none). Every other column lands in `meta`. An optional filter keeps the
rows whose `where_column` reads `where_value` (compared as `str(value)`), before any row is converted.

Rows are numbered from 0 as in `dataset[i]`, and errors start with `<file>:row <i>:`; a missing column is reported
with the columns that exist before a single row is converted.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable
from typing import Any

from bitune_jax.data.records import DataError, Record, record_from_row

EXTRA = "pip install 'bitune_jax[data]'"
_SHARD = re.compile(r"^(?P<split>.+)-(?P<index>\d+)-of-(?P<count>\d+)\.parquet$")  # <split>-00000-of-00002.parquet

# (file named in errors, its column names, a thunk reading it as a pyarrow Table)
Source = tuple[str, list[str], Callable[[], Any]]


@dataclasses.dataclass(frozen=True)
class TableRecord(Record):
    """A `Record` read from a table: `line` is the 0-based row, so every later error (tokenization, truncation
    reports) points at `file:row i`."""

    @property
    def where(self) -> str:
        return f"{self.file}:row {self.line}"


def read_hf_records(
    path: str | pathlib.Path,
    *,
    split: str = "train",
    messages: str = "messages",
    prompt: str = "prompt",
    response: str = "response",
    where_column: str = "",
    where_value: str = "",
) -> list[Record]:
    """All records of a `save_to_disk` directory, a Parquet file or a folder of Parquet shards, in row order."""
    if where_value and not where_column:
        raise DataError(f"{path}: where_value={where_value!r} needs a where_column to compare it with")
    sources = _sources(pathlib.Path(path), split)
    plans = [_columns(file, names, messages, prompt, response, where_column) for file, names, _ in sources]
    records: list[Record] = []
    total, seen = 0, set()
    for (file, _, load), core in zip(sources, plans):
        table = load()
        total += table.num_rows
        rows = list(range(table.num_rows))
        if where_column:
            values = [str(v) for v in table.column(where_column).to_pylist()]
            rows = [i for i, v in enumerate(values) if v == where_value]
            seen.update(list(dict.fromkeys(values))[:8])  # a few values for the error if none matches
            table = table.take(rows) if rows else table.slice(0, 0)  # take([]) has no index type
        records += _records(file, table, rows, core)
    if not total:
        raise DataError(f"{path}: no rows")
    if not records:
        raise DataError(
            f"{path}: no row has {where_column}={where_value!r} (of {total}); values include {sorted(seen)[:8]}"
        )
    return records


def _sources(path: pathlib.Path, split: str) -> list[Source]:
    """What to read at `path`, each with its columns, so every table is checked before any row is converted."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset directory or Parquet file")
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataError(f"{path}: not a .parquet file (JSONL is read with data.source=jsonl)")
        return [_parquet(path)]
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return [_saved(path, split)]
    shards = sorted(path.glob("*.parquet"))
    if not shards:
        raise DataError(
            f"{path}: neither a save_to_disk directory (dataset_dict.json or state.json) nor a folder of .parquet files"
        )
    splits = {m["split"] for s in shards if (m := _SHARD.match(s.name))}
    if len(splits) > 1:
        if split not in splits:
            raise DataError(f"{path}: shards of splits {sorted(splits)}; set the split to one of them, not {split!r}")
        shards = [s for s in shards if (m := _SHARD.match(s.name)) and m["split"] == split]
    _check_complete(path, shards)
    return [_parquet(s) for s in shards]


def _check_complete(path: pathlib.Path, shards: list[pathlib.Path]) -> None:
    """Hub shards name their count (`-00000-of-00003`): a folder missing some would train on part of the data."""
    by_split: dict[str, tuple[set[int], set[int]]] = {}
    for s in shards:
        if m := _SHARD.match(s.name):
            indices, counts = by_split.setdefault(m["split"], (set(), set()))
            indices.add(int(m["index"]))
            counts.add(int(m["count"]))
    for split, (indices, counts) in by_split.items():
        missing = sorted(set(range(max(counts))) - indices) if len(counts) == 1 else None
        if missing is None or missing:
            what = f"counts {sorted(counts)} disagree" if missing is None else f"shards {missing} are missing"
            raise DataError(
                f"{path}: the {split!r} shards say they are {max(counts)} files, but {what}; download the rest "
                "(a partial folder would train on part of the data)"
            )


def _parquet(file: pathlib.Path) -> Source:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading Parquet needs pyarrow: {EXTRA}") from e
    try:
        names = pq.read_schema(file).names
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{file}: not a readable Parquet file ({e})") from None
    return str(file), names, lambda: pq.read_table(file)


def _saved(path: pathlib.Path, split: str) -> Source:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(f"reading a save_to_disk directory needs Hugging Face datasets: {EXTRA}") from e
    ds, name = datasets.load_from_disk(str(path)), str(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r}; the splits are {sorted(ds)}")
        ds, name = ds[split], str(path / split)
    return name, list(ds.column_names), lambda: ds.with_format("arrow")[:]


def _columns(
    file: str, names: list[str], messages: str, prompt: str, response: str, where_column: str
) -> tuple[str, ...]:
    """The columns that make a record: `(messages,)` for chat rows, `(prompt, response)` for pairs."""
    if where_column and where_column not in names:
        raise DataError(f"{file}: no column {where_column!r} (the filter's where_column); the columns are {names}")
    if messages and messages in names:
        return (messages,)
    for column, key in ((prompt, "prompt"), (response, "response")):
        if column not in names:
            chat = f" and no chat column {messages!r}" if messages else ""
            raise DataError(f"{file}: no column {column!r} (the {key}){chat}; the columns are {names}")
    return (prompt, response)


def _records(file: str, table: Any, rows: list[int], core: tuple[str, ...]) -> list[Record]:
    """Column-wise `to_pylist` (fast: no per-row pandas), then the JSONL rules row by row; `rows[j]` is the
    original row number of the table's j-th row (after the filter)."""
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    chat = len(core) == 1
    system = "system" if not chat and "system" in columns and "system" not in core else None
    meta_names = [n for n in table.column_names if n not in core and n != system]
    keys = ("messages",) if chat else ("prompt", "response")
    renamed = [f"{key!r} is column {column!r}" for key, column in zip(keys, core) if key != column]
    note = f" ({', '.join(renamed)})" if renamed else ""  # record_from_row names the JSONL field
    out: list[Record] = []
    for j, i in enumerate(rows):
        if chat:
            row = {"messages": columns[core[0]][j]}
        else:
            row = {"prompt": columns[core[0]][j], "response": columns[core[1]][j]}
            if system and columns[system][j] is not None:
                row["system"] = columns[system][j]
        try:
            messages = record_from_row(row, file, i, where=f"{file}:row {i}").messages
        except DataError as e:
            raise DataError(f"{e}{note}") from None
        out.append(TableRecord(messages=messages, file=file, line=i, meta={n: columns[n][j] for n in meta_names}))
    return out
