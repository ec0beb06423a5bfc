"""The repetition authors' Dolci training pool and split, row for row, as one JSONL file.

    python -m experiments.prepare_dolci --source PATH --tokenizer DIR --out DIR [--first 200000] \\
        [--max_response_tokens 10000] [--val 1000] [--start_n 100] [--subsets 10] [--seed 42]

"Data Repetition Beats Data Scaling in Long-CoT SFT" (github dkopi/data-repetition, commit fcb45d8) builds its
data with two scripts, reproduced here without `datasets` or `transformers` at run time:

`data/convert_dolci.py`
  1. `load_dataset("allenai/Dolci-Think-SFT-7B", split="train").shuffle(seed=42).select(range(200000))`;
  2. keep the rows whose `messages[0].role == "user"` and `messages[1].role == "assistant"`. Only those two
     messages are looked at: a row of 3+ messages whose first two are user/assistant passes, and (step 3) only its
     first turn is kept; a system message first drops the row. Reproduced exactly;
  3. `query = messages[0].content`, `response = messages[1].content`;
  4. keep the rows whose response contains both `<think>` and `</think>` (substrings, anywhere);
  5. keep the rows with `len(tokenizer(response)["input_ids"]) < 10000`, the Olmo-3-7B-Instruct tokenizer
     (transformers, `add_special_tokens=True` by default).
`data/split.py`
  6. `ds.shuffle(seed=42)`; validation = rows `0 .. val-1`; the train set of size `n` is
     `ds.select(range(val, len(ds))).select(range(n))` for `n = start_n * 2**i`, `i < subsets`: the sets are nested
     prefixes of one order.

`Dataset.shuffle(seed=s)` is `numpy.random.default_rng(s).permutation(len(ds))` followed by
`select(indices=permutation)` (datasets 5.2.0, `datasets/arrow_dataset.py`, `Dataset.shuffle`: with no
`generator`, `generator = np.random.default_rng(seed)`, then `permutation = generator.permutation(len(self))` and
`return self.select(indices=permutation, ...)`), and `select(range(k))` of a shuffled dataset is the first `k`
entries of that permutation. So step 1 is `authors_permutation(N, seed)[:first]` of the `N` source rows in their
stored order (the Hub's shards in name order, as `load_dataset` concatenates them), and step 6 is
`split_order(M, seed)` of the `M` rows left after step 5. The authors' `filter`/`map` with `num_proc=64` keep row
order (contiguous shards, concatenated), so the filters here are order-preserving list filters.

Token counts (step 5) use the tokenizer directory's `tokenizer.json` with the `tokenizers` library:
`Tokenizer.from_file(DIR/tokenizer.json).encode_batch(texts, add_special_tokens=True)` with truncation and padding
switched off. That is what a transformers fast tokenizer does for `tokenizer(text)`: it encodes with the Rust
tokenizer, its post-processor adding the special tokens (BOS/EOS) the model's tokenizer adds, and it switches off
any truncation/padding stored in tokenizer.json unless asked for. `manifest.json` records how many special tokens
the post-processor adds (`special_tokens_added`); a transformers tokenizer class that rebuilds its post-processor
from `tokenizer_config.json` (`add_bos_token`/`add_eos_token`) could differ from tokenizer.json by those tokens,
so a warning is printed when the config asks for BOS/EOS that the post-processor does not add.

Where the authors' code would crash, this script stops with a `DataError` naming the file and row: a row with
fewer than two messages (their `x["messages"][1]` raises IndexError), messages that are not a list of
`{role, content}` objects, a user/assistant row whose content is not a string, and `--first` larger than the
dataset (`select(range(200000))` fails). A `--val` larger than the pool, likewise (split.py's `select(range(val))`);
train sizes larger than the rest are left out, as `select(range(n))` would fail on them (the manifest lists the
sizes that fit).

Output in `--out`:
  * `pool.jsonl`: the rows in split order, one `{"prompt": query, "response": response, "dolci_row": i}` a line
    (UTF-8, `ensure_ascii=False`; `i` is the row's index in the source, 0-based, shards in name order). The first
    `--val` lines are the validation set; the train set of size `n` is lines `val .. val+n-1`. The training config
    reads it with `data.pool_order="file"` (validation = the first `data.val_size` rows, train = the next
    `data.num_samples`, no reshuffle).
  * `manifest.json`: the counts after each step, the seed, first, val, the nested train sizes that fit, the
    sha256 of pool.jsonl and the command.

`--source` is a local copy of Dolci-Think-SFT-7B: a folder of Parquet shards (Hub-style
`train-00000-of-000NN.parquet`, read in name order; a Hub snapshot whose shards sit in `data/` works too), a single
`.parquet` file, or a `save_to_disk` directory (`bitune_jax.data.hf_datasets` finds the files). Only the `messages`
column is read, one shard at a time, and only the `first` selected rows (their first two messages) become Python
objects, in shuffled order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bitune_jax.data.hf_datasets import _sources
from bitune_jax.data.records import DataError

POOL = "pool.jsonl"
MANIFEST = "manifest.json"
TOKEN_BATCH = 1024
DESCRIPTION = "The repetition authors' Dolci pool (convert_dolci.py) in their split order (split.py), as pool.jsonl."


def authors_permutation(n: int, seed: int = 42) -> np.ndarray:
    """`Dataset.shuffle(seed=seed)`'s row order for `n` rows: `numpy.random.default_rng(seed).permutation(n)`."""
    return np.random.default_rng(seed).permutation(n)


def split_order(n: int, seed: int = 42) -> np.ndarray:
    """split.py's `ds.shuffle(seed=seed)` of the `n` converted rows: the same draw as `authors_permutation`, over
    the filtered count. Position `k` of the split order holds converted row `split_order(n, seed)[k]`."""
    return authors_permutation(n, seed)


def train_sizes(pool_rows: int, val: int, start_n: int = 100, subsets: int = 10) -> list[int]:
    """split.py's nested train sizes `start_n * 2**i` (`i < subsets`) that fit in the `pool_rows - val` rows."""
    return [start_n * 2**i for i in range(subsets) if start_n * 2**i <= pool_rows - val]


def token_counter(tokenizer_dir: str | pathlib.Path, batch_size: int = TOKEN_BATCH) -> Callable[[list[str]], list[int]]:
    """`texts -> [len(tokenizer(text)["input_ids"]) ...]` as transformers counts them (special tokens added by the
    tokenizer.json post-processor, no truncation or padding), batched through `encode_batch`."""
    tok = load_tokenizer(tokenizer_dir)

    def count(texts: list[str]) -> list[int]:
        out: list[int] = []
        for start in range(0, len(texts), batch_size):
            out += [len(e.ids) for e in tok.encode_batch(texts[start : start + batch_size], add_special_tokens=True)]
        return out

    return count


def load_tokenizer(tokenizer_dir: str | pathlib.Path):
    """`tokenizers.Tokenizer` of `DIR/tokenizer.json`, truncation and padding off (as transformers leaves them)."""
    file = pathlib.Path(tokenizer_dir) / "tokenizer.json"
    if not file.is_file():
        raise DataError(
            f"{file}: no such file; --tokenizer must be a Hugging Face tokenizer directory with a tokenizer.json "
            "(e.g. a local copy of allenai/Olmo-3-7B-Instruct)"
        )
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(file))
    tok.no_truncation()
    tok.no_padding()
    return tok


def convert(
    rows: Any,
    *,
    dolci_rows: Sequence[int] | None = None,
    count_tokens: Callable[[list[str]], list[int]] | None = None,
    max_response_tokens: int = 10000,
    locate: Callable[[int], str] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """convert_dolci.py's filters and map, after its shuffle/select, in row order.

    `rows`: a pyarrow Table with a `messages` column, or an iterable of rows, each a mapping with `messages` or the
    messages list itself. `dolci_rows[j]` is row j's index in the source (default: j); `locate(dolci_row)` names it
    in errors (default `row <i>`). `count_tokens` maps a list of responses to their token counts; None skips the
    token filter. Returns the kept rows `{"prompt", "response", "dolci_row"}` and the counts after each step:
    `selected`, `user_assistant`, `think`, `under_max_tokens`.
    """
    if hasattr(rows, "column_names"):  # a pyarrow Table
        if "messages" not in rows.column_names:
            raise DataError(f"no column 'messages'; the columns are {rows.column_names}")
        import pyarrow.compute as pc

        rows = pc.list_slice(rows.column("messages"), 0, 2).to_pylist()
    locate = locate or (lambda i: f"row {i}")
    kept: list[dict] = []
    selected = user_assistant = 0
    for j, row in enumerate(rows):
        selected += 1
        i = int(dolci_rows[j]) if dolci_rows is not None else j
        messages = row.get("messages") if isinstance(row, Mapping) else row
        pair = _first_two(messages, locate, i)
        if pair[0]["role"] != "user" or pair[1]["role"] != "assistant":
            continue
        user_assistant += 1
        for m in pair:
            if not isinstance(m["content"], str):
                raise DataError(
                    f"{locate(i)}: the {m['role']} message's content is {type(m['content']).__name__}, not a string"
                )
        kept.append({"prompt": pair[0]["content"], "response": pair[1]["content"], "dolci_row": i})
    kept = [r for r in kept if "<think>" in r["response"] and "</think>" in r["response"]]
    counts = {"selected": selected, "user_assistant": user_assistant, "think": len(kept)}
    if count_tokens is not None:
        lengths = count_tokens([r["response"] for r in kept])
        kept = [r for r, n in zip(kept, lengths, strict=True) if n < max_response_tokens]
    counts["under_max_tokens"] = len(kept)
    return kept, counts


def _first_two(messages: Any, locate: Callable[[int], str], i: int) -> tuple[Mapping, Mapping]:
    if not isinstance(messages, list | tuple):
        raise DataError(f"{locate(i)}: messages is {type(messages).__name__}, not a list of {{role, content}}")
    if len(messages) < 2:
        raise DataError(
            f"{locate(i)}: {len(messages)} message(s); convert_dolci.py reads messages[0] and messages[1] "
            "(an IndexError there)"
        )
    for k in (0, 1):
        m = messages[k]
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"{locate(i)}: messages[{k}] is {m!r:.80}, not a {{role, content}} object")
    return messages[0], messages[1]


# -- reading the source ------------------------------------------------------------------------------------------


class _Shard:
    """One file (or save_to_disk table) of the source: its row count, and its `messages` column on demand."""

    def __init__(self, file: str, names: list[str], load: Callable[[], Any]):
        self.file = file
        if "messages" not in names:
            raise DataError(f"{file}: no column 'messages' (Dolci's chat column); the columns are {names}")
        path = pathlib.Path(file)
        if path.suffix == ".parquet" and path.is_file():
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path)
            self.rows = meta.metadata.num_rows
            self.type = meta.schema_arrow.field("messages").type
            self._read = lambda: pq.read_table(path, columns=["messages"]).column("messages")
        else:  # a save_to_disk table: memory-mapped, cheap to hold
            table = load()
            self.rows = table.num_rows
            self.type = table.schema.field("messages").type
            self._read = lambda: table.column("messages")
        _check_type(file, self.type)

    def take(self, local: np.ndarray) -> list:
        """The first two messages of rows `local` (in that order) as Python lists of dicts."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self._read()
        return pc.list_slice(column.take(pa.array(local, type=pa.int64())), 0, 2).to_pylist()


def _check_type(file: str, t: Any) -> None:
    import pyarrow as pa

    ok = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type)
    fields = {t.value_type.field(k).name for k in range(t.value_type.num_fields)} if ok else set()
    if not {"role", "content"} <= fields:
        raise DataError(f"{file}: column 'messages' is {t}, not a list of {{role, content}} objects")


def read_shards(source: str | pathlib.Path) -> list[_Shard]:
    """The source's files in row order, each checked for a `messages` list-of-{role, content} column."""
    path = pathlib.Path(source)
    if path.is_dir() and not any(path.glob("*.parquet")) and any((path / "data").glob("*.parquet")):
        path = path / "data"  # a Hub snapshot: data/train-00000-of-000NN.parquet
    return [_Shard(file, names, load) for file, names, load in _sources(path, "train")]


def read_selected(shards: list[_Shard], indices: np.ndarray) -> tuple[list, Callable[[int], str]]:
    """The first two messages of source rows `indices` (global, shards concatenated), in that order, one shard at a
    time, and `locate(i)` naming global row `i` as `<file>:row <local> (dataset row i)`."""
    offsets = np.cumsum([0] + [s.rows for s in shards])
    out: list = [None] * len(indices)
    for k, shard in enumerate(shards):
        (where,) = np.nonzero((indices >= offsets[k]) & (indices < offsets[k + 1]))
        if len(where):
            for p, messages in zip(where.tolist(), shard.take(indices[where] - offsets[k])):
                out[p] = messages

    def locate(i: int) -> str:
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        return f"{shards[k].file}:row {i - int(offsets[k])} (dataset row {i})"

    return out, locate


# -- the command -------------------------------------------------------------------------------------------------


def prepare(
    source: str | pathlib.Path,
    tokenizer: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    first: int = 200000,
    max_response_tokens: int = 10000,
    val: int = 1000,
    start_n: int = 100,
    subsets: int = 10,
    seed: int = 42,
    command: str = "",
) -> dict:
    """convert_dolci.py then split.py: writes `out/pool.jsonl` (split order) and `out/manifest.json`; returns the
    manifest."""
    count_tokens = token_counter(tokenizer)  # a missing tokenizer.json fails before any data is read
    special = load_tokenizer(tokenizer).num_special_tokens_to_add(False)
    _warn_special_tokens(tokenizer, special)
    shards = read_shards(source)
    total = sum(s.rows for s in shards)
    if total < first:
        raise DataError(
            f"{source}: {total} rows, fewer than --first {first} (convert_dolci.py's select(range({first})) fails too)"
        )
    selected = authors_permutation(total, seed)[:first]
    rows, locate = read_selected(shards, selected)
    kept, counts = convert(
        rows, dolci_rows=selected, count_tokens=count_tokens, max_response_tokens=max_response_tokens, locate=locate
    )
    del rows
    if len(kept) < val:
        raise DataError(f"{source}: {len(kept)} rows left after the filters, fewer than --val {val}")
    pool = [kept[k] for k in split_order(len(kept), seed)]

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out / (POOL + ".tmp")
    with open(tmp, "wb") as f:
        for row in pool:
            line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            f.write(line)
    os.replace(tmp, out / POOL)

    manifest = {
        "source": str(source),
        "files": [s.file for s in shards],
        "source_rows": total,
        "tokenizer": str(tokenizer),
        "special_tokens_added": special,
        "seed": seed,
        "first": first,
        "max_response_tokens": max_response_tokens,
        "counts": counts,
        "pool_rows": len(pool),
        "val": val,
        "train_pool_rows": len(pool) - val,
        "start_n": start_n,
        "subsets": subsets,
        "train_sizes": train_sizes(len(pool), val, start_n, subsets),
        "layout": f"{POOL}: lines 0..val-1 are the validation set; the train set of size n is lines val..val+n-1",
        "sha256": digest.hexdigest(),
        "command": command,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _warn_special_tokens(tokenizer: str | pathlib.Path, special: int) -> None:
    config = pathlib.Path(tokenizer) / "tokenizer_config.json"
    if not config.is_file():
        return
    try:
        flags = json.loads(config.read_text())
    except (OSError, ValueError):
        return
    asked = [k for k in ("add_bos_token", "add_eos_token") if flags.get(k) is True]
    if asked and special == 0:
        print(
            f"warning: {config} sets {', '.join(asked)} but tokenizer.json's post-processor adds no special token; "
            "transformers may count one more token per response than this script",
            file=sys.stderr,
        )


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.prepare_dolci", description=DESCRIPTION)
    p.add_argument("--source", required=True, help="Dolci-Think-SFT-7B: Parquet shards folder, .parquet, save_to_disk")
    p.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory (tokenizer.json)")
    p.add_argument("--out", required=True, help="output directory: pool.jsonl and manifest.json")
    p.add_argument("--first", type=int, default=200000)
    p.add_argument("--max_response_tokens", type=int, default=10000)
    p.add_argument("--val", type=int, default=1000)
    p.add_argument("--start_n", type=int, default=100)
    p.add_argument("--subsets", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(None if argv is None else list(argv))


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    manifest = prepare(
        a.source,
        a.tokenizer,
        a.out,
        first=a.first,
        max_response_tokens=a.max_response_tokens,
        val=a.val,
        start_n=a.start_n,
        subsets=a.subsets,
        seed=a.seed,
        command=shlex.join(["python", "-m", "experiments.prepare_dolci", *argv]),
    )
    c = manifest["counts"]
    print(
        f"{manifest['source_rows']} source rows; selected {c['selected']}; user/assistant {c['user_assistant']}; "
        f"<think>...</think> {c['think']}; < {a.max_response_tokens} tokens {c['under_max_tokens']}"
    )
    print(f"wrote {pathlib.Path(a.out) / POOL}: {a.val} validation rows, then {manifest['train_pool_rows']} train rows")
    print(f"train sizes: {manifest['train_sizes']}")
    return manifest


if __name__ == "__main__":
    try:
        main()
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
