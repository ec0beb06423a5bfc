"""Rows from JSONL: both formats, and every bad row named by file and 1-based line."""

import gzip
import json
import re

import pytest

from bitune_jax.data import DataError, Record, read_jsonl, read_records, write_jsonl

GOOD_CHAT = {"messages": [{"role": "user", "content": "hi?"}, {"role": "assistant", "content": "hello"}], "id": 7}
GOOD_PAIR = {"prompt": "2+2?", "response": "4", "system": "Be brief."}


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_both_formats_blank_lines_and_meta(tmp_path):
    path = write(tmp_path / "d.jsonl", [json.dumps(GOOD_CHAT), "", "   ", json.dumps(GOOD_PAIR)])
    chat, pair = read_jsonl(path)
    assert chat.messages == GOOD_CHAT["messages"] and chat.meta == {"id": 7} and chat.line == 1
    assert pair.line == 4 and pair.where == f"{path}:4" and pair.meta == {}
    assert pair.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert pair.response == "4" and pair.prompt_messages == pair.messages[:-1]


BAD = {
    "malformed": ('{"messages": [', "malformed JSON"),
    "not_object": ("[1, 2]", "must be a JSON object, got list"),
    "no_fields": ('{"text": "x"}', "missing field: expected 'messages', or 'prompt' and 'response'"),
    "no_response": ('{"prompt": "q"}', "missing field 'response'"),
    "no_prompt": ('{"response": "a"}', "missing field 'prompt'"),
    "response_type": ('{"prompt": "q", "response": 3}', "field 'response' must be a string, got int"),
    "system_type": ('{"prompt": "q", "response": "a", "system": null}', "field 'system' must be a string"),
    "empty_response": ('{"prompt": "q", "response": "  "}', "empty response"),
    "empty_prompt": ('{"prompt": "", "response": "a"}', "empty prompt"),
    "empty_chat_response": (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
        "empty response",
    ),
    "last_not_assistant": (
        '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}',
        "last message must be from the assistant",
    ),
    "messages_type": ('{"messages": "hi"}', "field 'messages' must be a list, got str"),
    "too_few": ('{"messages": [{"role": "assistant", "content": "a"}]}', "at least 2 messages"),
    "message_type": ('{"messages": ["q", {"role": "assistant", "content": "a"}]}', "messages[0] must be an object"),
    "missing_content": (
        '{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}',
        "missing field 'messages[0].content'",
    ),
    "role_type": (
        '{"messages": [{"role": 1, "content": "q"}, {"role": "assistant", "content": "a"}]}',
        "field 'messages[0].role' must be a string",
    ),
    "both_formats": ('{"messages": [], "prompt": "q", "response": "a"}', "not both"),
    "zero_width_response": ('{"prompt": "q", "response": "\\u200b"}', "empty response (no visible text)"),
    "duplicate_keys": ('{"prompt": "q", "response": "a", "response": "b"}', "the key 'response' appears twice"),
    "nan_literal": ('{"prompt": "q", "response": "a", "score": NaN}', "NaN is not JSON"),
    "unknown_role": (
        '{"messages": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        "messages[0].role='human' is not a role a chat template knows",
    ),
    "no_user_turn": (
        '{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}',
        "no user message before the answer",
    ),
    "lone_surrogate": ('{"prompt": "q \\ud800", "response": "a"}', "field 'prompt' holds a lone surrogate (U+D800)"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_rows_name_file_and_line(tmp_path, name):
    text, what = BAD[name]
    path = write(tmp_path / f"{name}.jsonl", [json.dumps(GOOD_CHAT), "", text, json.dumps(GOOD_PAIR)])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(what)):
        read_records([path])


def test_missing_file_and_parquet(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="read Parquet with bitune_jax.data.hf_datasets"):
        read_records(str(tmp_path / "x.parquet"))


def test_write_read_roundtrip_and_gzip(tmp_path):
    records = [Record(messages=GOOD_CHAT["messages"], file="mem", line=1, meta={"answer": 4, "tag": "a"})]
    back = read_jsonl(write_jsonl(records, tmp_path / "sub" / "out.jsonl"))
    assert back[0].messages == records[0].messages and back[0].meta == records[0].meta
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as f:
        f.write(json.dumps(GOOD_PAIR) + "\n\n" + json.dumps(GOOD_CHAT) + "\n")
    assert [r.line for r in read_records(tmp_path / "z.jsonl.gz")] == [1, 3]


def test_unreadable_training_files_name_file_and_line(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "hi", "response": "ok"}\n{"prompt": "caf\xe9", "response": "ok"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl:2: not UTF-8 text \(byte 0xe9 at column 16\)"):
        read_records(bad)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no rows"):
        read_records(tmp_path / "empty.jsonl")
    packed = tmp_path / "train.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write('{"prompt": "hi", "response": "ok"}\n' * 2000)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.jsonl.gz: not a complete gzip file"):
        read_records(tmp_path / "cut.jsonl.gz")
