"""Training and evaluation rows read from JSONL, each remembering the file and line it came from.

Two row formats are accepted, one JSON object per line:
  * chat: `{"messages": [{"role": ..., "content": ...}, ...]}` whose last message is the assistant's answer;
  * pair: `{"prompt": str, "response": str}` with an optional `"system": str`.
Both become a `Record` holding a chat `messages` list, so everything downstream (templates, tokenization, loss
masks) sees one shape. Any other top-level keys (an `"answer"` for evaluation, an `"id"`) are kept in `meta`.

Errors are raised while reading, not deep inside a training step, and always start with `file:line:` so a person
can open the file at the bad row. Parquet files and `datasets` directories: `hf_datasets` (`data.source=hf`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import pathlib
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

Message = dict[str, str]
PAIR_KEYS = ("prompt", "response", "system")


class DataError(ValueError):
    """A bad row in a data file; the message starts with `file:line:`."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One conversation ending in the assistant turn to train on (or to compare a generation with)."""

    messages: list[Message]
    file: str
    line: int  # 1-based line in `file`
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # other top-level keys of the row

    @property
    def where(self) -> str:
        """`file:line`, the prefix of every error about this record."""
        return f"{self.file}:{self.line}"

    @property
    def prompt_messages(self) -> list[Message]:
        return self.messages[:-1]

    @property
    def response(self) -> str:
        return self.messages[-1]["content"]


def _fail(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what}")


ROLES = ("system", "user", "assistant", "tool")


def _check_str(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"field {field!r} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON's "\ud800" escapes decode to a lone surrogate, which no tokenizer takes
        raise _fail(
            where, f"field {field!r} holds a lone surrogate (U+{ord(value[e.start]):04X}) at {e.start}"
        ) from None
    return value


def _blank(text: str) -> bool:
    """No visible character: whitespace, zero-width and other format characters only (U+200B passes `strip`)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in text)


def _messages_from_chat(row: Mapping[str, Any], where: str) -> list[Message]:
    messages = row["messages"]
    if not isinstance(messages, list):
        raise _fail(where, f"field 'messages' must be a list, got {type(messages).__name__}")
    if len(messages) < 2:
        raise _fail(
            where, f"'messages' needs a prompt and an assistant answer (at least 2 messages), got {len(messages)}"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _fail(where, f"messages[{i}] must be an object with 'role' and 'content', got {type(m).__name__}")
        for key in ("role", "content"):
            if key not in m:
                raise _fail(where, f"missing field 'messages[{i}].{key}'")
            _check_str(m[key], where, f"messages[{i}].{key}")
        if m["role"] not in ROLES:
            raise _fail(where, f"messages[{i}].role={m['role']!r} is not a role a chat template knows: {ROLES}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise _fail(
            where, f"the last message must be from the assistant (the answer to train on), got role {out[-1]['role']!r}"
        )
    if _blank(out[-1]["content"]):
        raise _fail(where, "empty response: the last (assistant) message has no visible text")
    if not any(m["role"] == "user" for m in out[:-1]):
        raise _fail(where, "no user message before the answer: there is no prompt to answer")
    return out


def _messages_from_pair(row: Mapping[str, Any], where: str) -> list[Message]:
    for key in ("prompt", "response"):
        if key not in row:
            raise _fail(where, f"missing field {key!r} (a row needs 'messages', or 'prompt' and 'response')")
    prompt = _check_str(row["prompt"], where, "prompt")
    response = _check_str(row["response"], where, "response")
    if _blank(prompt):
        raise _fail(where, "empty prompt (no visible text)")
    if _blank(response):
        raise _fail(where, "empty response (no visible text)")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if "system" in row:
        messages.insert(0, {"role": "system", "content": _check_str(row["system"], where, "system")})
    return messages


def record_from_row(row: Any, file: str, line: int, where: str = "") -> Record:
    """Validate one decoded JSON row (either format) and turn it into a `Record`; errors start with `where`
    (default `file:line`; a table reader passes `file:row i`)."""
    where = where or f"{file}:{line}"
    if not isinstance(row, dict):
        raise _fail(where, f"a row must be a JSON object, got {type(row).__name__}")
    if "messages" in row:
        if "prompt" in row or "response" in row:
            raise _fail(where, "a row has either 'messages' or 'prompt'/'response', not both")
        messages, consumed = _messages_from_chat(row, where), ("messages",)
    elif "prompt" in row or "response" in row:
        messages, consumed = _messages_from_pair(row, where), PAIR_KEYS
    else:
        raise _fail(
            where, f"missing field: expected 'messages', or 'prompt' and 'response'; the row has keys {sorted(row)}"
        )
    meta = {k: v for k, v in row.items() if k not in consumed}
    return Record(messages=messages, file=file, line=line, meta=meta)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys repeat is refused: `json` would keep the last value without a word."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object (JSON keeps only the last)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (Python's json reads it as a float); write a number or a string")


def jsonl_rows(path: str | pathlib.Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """`(file, line, row)` for every non-blank line of a `.jsonl` or `.jsonl.gz` file, line numbers true.

    Every way a file can be unreadable is a `DataError` naming it: bytes that are not UTF-8 (with the line and
    column), a truncated or fake gzip stream (with the last line read), malformed JSON, a row that is not an
    object, and a file with no rows at all."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: data file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    line_no, rows = 0, 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _fail(
                        f"{path}:{line_no}",
                        f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                        f"{e.start + 1}); re-encode the file as UTF-8",
                    ) from None
                if not text.strip():
                    continue
                try:
                    row = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
                except json.JSONDecodeError as e:
                    raise _fail(f"{path}:{line_no}", f"malformed JSON ({e.msg} at column {e.colno})") from None
                except ValueError as e:
                    raise _fail(f"{path}:{line_no}", str(e)) from None
                if not isinstance(row, dict):
                    raise _fail(f"{path}:{line_no}", f"a row must be a JSON object, got {type(row).__name__}")
                rows += 1
                yield str(path), line_no, row
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a complete gzip file ({e}); {line_no} lines read before the damage") from None
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty or blank); expected one JSON object per line")


def read_jsonl(path: str | pathlib.Path) -> list[Record]:
    """All records of one `.jsonl` (or `.jsonl.gz`) file; blank lines are skipped, line numbers stay true."""
    return [record_from_row(row, file, line) for file, line, row in jsonl_rows(path)]


def read_records(paths: str | pathlib.Path | Sequence[str | pathlib.Path]) -> list[Record]:
    """Records of one or more files, in file order then line order."""
    if isinstance(paths, (str, pathlib.Path)):
        paths = [paths]
    records = []
    for p in paths:
        name = str(p)
        if name.endswith(".parquet"):
            raise DataError(
                f"{name}: this reader reads JSONL; read Parquet with bitune_jax.data.hf_datasets.read_hf_records "
                "(in a run config: data.source=hf, data.hf.path=...)"
            )
        records.extend(read_jsonl(p))
    return records


def write_jsonl(records: Iterable[Record], path: str | pathlib.Path) -> pathlib.Path:
    """Write records in the chat format (`meta` keys beside `messages`); `read_jsonl` reads them back."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"messages": r.messages, **r.meta}, ensure_ascii=False) + "\n")
    return path
