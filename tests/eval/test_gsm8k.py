"""GSM8K 0-shot as the Bitune authors' harness task: extraction and scoring equal to lm-eval's own RegexFilter and
exact_match (the installed lm-eval, and a transcription of the authors' vendored code), the prompt and stop strings,
`evaluate_gsm8k` on canned generations, a tiny real model decoded greedily, and the readers' errors."""

import json
import re

import jax
import numpy as np
import pytest
import tokenizers

from bitune_jax.api import LM
from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.data.records import DataError
from bitune_jax.engine import Completion
from bitune_jax.eval.gsm8k import (
    FALLBACK,
    STOP_SEQUENCES,
    GSM8KRow,
    cut_at_stop,
    evaluate_gsm8k,
    evaluate_gsm8k_generate_fn,
    flexible_extract,
    gsm8k_prompt,
    is_match,
    normalize,
    read_gsm8k,
    strict_extract,
)
from bitune_jax.eval.model import TrainedModel
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import init_params
from bitune_jax.tokenizer import Tokenizer

# The authors' task, written out from dkopi/Bitune@7beb9f1 lm-evaluation-harness/lm_eval/tasks/gsm8k/gsm8k.yaml
# (not imported from the module under test).
YAML_FILTERS = {
    "strict-match": [("regex", {"regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}), ("take_first", None)],
    "flexible-extract": [
        ("regex", {"group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"}),
        ("take_first", None),
    ],
}
YAML_METRIC = {
    "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
    "ignore_case": True,
    "ignore_punctuation": False,
}

GENERATIONS = [
    "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72",
    "#### 1,234",
    "#### $5",
    "#### 7.",
    "He pays $1,000.50 in total.",
    "She has 3 apples and 4 pears, so 3 + 4 = 7 pieces of fruit.",  # flexible: the last number
    "The temperature drops to -5 degrees, then rises by 12.",
    "#### -3",
    "so the loss is -12 dollars",
    "I do not know.",  # no number
    "Hmm... no idea",  # "..." is a flexible match
    "The answer is ####",  # #### with no number
    "#### none of them, 8",
    "#### 10 and then #### 20",  # strict: the first
    "Answer: 18\n#### 18\n",
    " 5 + 3 = 8",
    "#### 0.5",
    "",
]
GOLDS = [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
    "It costs 1,000 + 234 = <<1000+234=1234>>1,234 dollars.\n#### 1,234",
    "#### 5",
    "#### 7",
    "#### -3",
    "#### 12",
    "#### 1000.50",
    "#### 8",
    "#### 20",
    "#### 0.5",
]
LETTER_PAIRS = [  # ignore_case and the regexes on words (only the fallback carries letters through the filters)
    ("[INVALID]", "#### [invalid]"),
    ("ABC.", "x\n#### abc"),
    ("Abc", "#### abd"),
    ("İ", "#### i"),  # numpy's lowering (one code point), not str.lower's
    ("$7,000.", "The total.\n#### 7000"),
    ("7.\n", "#### 7"),
]


def vendored_regex_filter(resps, regex_pattern, group_select=0, fallback="[invalid]"):
    """dkopi/Bitune@7beb9f1 lm-evaluation-harness/lm_eval/filters/extraction.py RegexFilter.apply, transcribed."""
    regex = re.compile(regex_pattern)

    def filter_set(inst):
        filtered = []
        for resp in inst:
            match = regex.findall(resp)
            if match:
                match = match[group_select]
                if isinstance(match, tuple):
                    match = [m for m in match if m][0]
                match = match.strip()
            else:
                match = fallback
            filtered.append(match)
        return filtered

    return [filter_set(x) for x in resps]


def hf_evaluate_exact_match(predictions, references, regexes_to_ignore=None, ignore_case=False, **_):
    """huggingface/evaluate metrics/exact_match/exact_match.py `_compute` (what the authors' api/metrics.py loads
    with `hf_evaluate.load("exact_match")`), transcribed; ignore_punctuation and ignore_numbers are off here."""
    if regexes_to_ignore is not None:
        for s in regexes_to_ignore:
            predictions = np.array([re.sub(s, "", x) for x in predictions])
            references = np.array([re.sub(s, "", x) for x in references])
    else:
        predictions, references = np.asarray(predictions), np.asarray(references)
    if ignore_case:
        predictions, references = np.char.lower(predictions), np.char.lower(references)
    return {"exact_match": np.mean(predictions == references)}


def vendored_extract(text, name):
    kwargs = YAML_FILTERS[name][0][1]
    return vendored_regex_filter([[text]], **kwargs)[0][0]  # take_first


def test_extraction_and_scoring_equal_the_vendored_harness():
    for text in GENERATIONS:
        assert strict_extract(text) == vendored_extract(text, "strict-match"), text
        assert flexible_extract(text) == vendored_extract(text, "flexible-extract"), text
    preds = {flexible_extract(t) for t in GENERATIONS} | {strict_extract(t) for t in GENERATIONS}
    pairs = [(p, g) for p in sorted(preds) for g in GOLDS] + LETTER_PAIRS
    matched = 0
    for pred, gold in pairs:
        want = hf_evaluate_exact_match(predictions=[pred], references=[gold], **YAML_METRIC)["exact_match"] == 1.0
        assert is_match(pred, gold) == want, (pred, gold)
        matched += want
    assert 10 < matched < len(pairs) // 2  # both outcomes are exercised


def test_extraction_and_scoring_equal_installed_lm_eval():
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_metric
    from lm_eval.filters import build_filter_ensemble

    docs = [{} for _ in GENERATIONS]
    got = {}
    for name, components in YAML_FILTERS.items():  # FilterEnsemble.apply without Instance objects
        resps = [[t] for t in GENERATIONS]
        for make in build_filter_ensemble(name, components).filters:
            resps = make().apply(resps, docs)
        got[name] = list(resps)
    assert got["strict-match"] == [strict_extract(t) for t in GENERATIONS]
    assert got["flexible-extract"] == [flexible_extract(t) for t in GENERATIONS]
    exact_match = get_metric("exact_match")
    preds = sorted(set(got["strict-match"]) | set(got["flexible-extract"]))
    for pred, gold in [(p, g) for p in preds for g in GOLDS] + LETTER_PAIRS:
        want = exact_match(references=[gold], predictions=[pred], **YAML_METRIC)["exact_match"] == 1.0
        assert is_match(pred, gold) == want, (pred, gold)


def test_the_tricky_cases_by_hand():
    assert strict_extract("#### 1,234") == "1,234" and is_match("1,234", "#### 1234")
    assert strict_extract("#### $5") == FALLBACK and flexible_extract("#### $5") == "$5" and is_match("$5", "#### 5")
    assert strict_extract("#### 7.") == "7." and is_match("7.", "#### 7")
    assert flexible_extract("3 + 4 = 7 pieces") == "7" and flexible_extract("-5 then 12.") == "12."
    assert strict_extract("#### -3") == "-3" and is_match("-3", "#### -3") and not is_match("3", "#### -3")
    assert strict_extract("I do not know.") == flexible_extract("I do not know.") == "[invalid]"
    assert flexible_extract("Hmm... no idea") == "..." and strict_extract("The answer is ####") == FALLBACK
    assert strict_extract("#### 10 and then #### 20") == "10"
    assert normalize("x, y $1,000.\n#### 1,000.") == "1000" and normalize("$1,000.50") == "1000.50"
    assert is_match("ABC.", "x #### abc") and not is_match("1000.50", "#### 1000.5")


def test_prompt_and_stop_strings():
    assert gsm8k_prompt("How many?") == "Question: How many?\n\nAnswer:"
    assert STOP_SEQUENCES == ("Question:", "</s>", "<|im_end|>", "<|end_of_text|>")
    assert cut_at_stop(" 4\n\nQuestion: again") == " 4\n\n" and cut_at_stop("#### 3<|im_end|>x") == "#### 3"
    assert cut_at_stop("no stop") == "no stop" and cut_at_stop("a</s>b<|end_of_text|>") == "a"
    # The harness splits term after term in list order (not at the earliest start of any term):
    assert cut_at_stop("xab", ("ab", "xa")) == "x" and cut_at_stop("ab", ("", "b")) == "a"


def char_tokenizer() -> Tokenizer:
    """One token per printable character (ids 3..97, newline 98); <pad> 0, <s> 1 (BOS), </s> 2 (EOS)."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{chr(i): i - 29 for i in range(32, 127)}, "\n": 98}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = tokenizers.decoders.Fuse()
    backend.add_special_tokens(["<pad>", "<s>", "</s>"])
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return Tokenizer(backend, bos_id=1, eos_ids=(2,), pad_id=0, add_bos=False, special_tokens=specials)


ROWS = [
    GSM8KRow("What is 5 + 3?", "5 + 3 = <<5+3=8>>8\n#### 8", "q.jsonl:1"),
    GSM8KRow("Tom has 12.", "#### 12", "q.jsonl:2"),
    GSM8KRow("A, B?", "#### 1,234", "q.jsonl:3"),
    GSM8KRow("Q4", "#### 3", "q.jsonl:4"),
    GSM8KRow("Q5", "#### 7", "q.jsonl:5"),
]
CANNED = [  # (generation, ends with EOS)
    (" 5 + 3 = 8.\n#### 8\n\nQuestion: What is 1 + 1?\n\nAnswer: #### 2", True),
    (" I think 12\n\nQuestion: next?\n\nAnswer: #### 12", True),  # the #### is cut off: strict fails
    (" 1,000 + 234 = 1,234.", False),
    (" #### 3<|im_end|>#### 4", True),
    (" 7 and then 9</s>", False),  # "</s>" as text (characters) is a stop string too
]


def test_evaluate_with_canned_generations():
    tok = char_tokenizer()
    calls = []

    def fake_generate(requests):
        calls.append(requests)
        canned = CANNED[: len(requests)]
        return [Completion(i, [tok.encode(t) + ([2] if eos else [])], []) for i, (t, eos) in enumerate(canned)]

    records, summary = evaluate_gsm8k_generate_fn(fake_generate, tok, ROWS, max_new_tokens=7)
    (requests,) = calls  # greedy, each row stopping at the task's stop strings
    assert all((r.max_new_tokens, r.temperature, r.stop) == (7, 0.0, STOP_SEQUENCES) for r in requests)
    prompts = [r.prompt for r in requests]
    for row, ids in zip(ROWS, prompts, strict=True):
        assert ids[0] == tok.bos_id and ids[1:] == tok.encode(gsm8k_prompt(row.question), add_bos=False)
    assert [r.generation for r in records] == [" 5 + 3 = 8.\n#### 8\n\n", " I think 12\n\n", " 1,000 + 234 = 1,234.",
                                               " #### 3", " 7 and then 9"]  # fmt: skip
    assert [r.strict for r in records] == ["8", FALLBACK, FALLBACK, "3", FALLBACK]
    assert [r.flexible for r in records] == ["8", "12", "1,234.", "3", "9"]
    assert [r.strict_correct for r in records] == [True, False, False, True, False]
    assert [r.flexible_correct for r in records] == [True, True, True, True, False]
    assert records[0].tokens == len(CANNED[0][0]) + 1 and records[2].tokens == len(CANNED[2][0])
    assert (records[1].source, records[1].question, records[1].gold) == ("q.jsonl:2", "Tom has 12.", "#### 12")
    assert summary == {"exact_match_strict": 0.4, "exact_match_flexible": 0.8, "questions": 5}

    calls.clear()
    evaluate_gsm8k_generate_fn(fake_generate, tok, ROWS[:1], add_bos=False)
    assert calls[0][0].prompt == tok.encode(gsm8k_prompt(ROWS[0].question), add_bos=False)


def tiny_lm() -> LM:
    tok = char_tokenizer()
    cfg = ModelConfig(family="llama", vocab_size=99, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                      mlp_dim=64, max_seq_len=512, bos_id=1, eos_ids=(2,), pad_id=0)  # fmt: skip
    return LM(cfg, init_params(cfg, jax.random.key(5), scale=0.5), tok)  # key 5: both rows stop within 48 tokens


def test_tiny_model_greedy_equals_a_direct_decode():
    lm, tok = tiny_lm(), char_tokenizer()
    rows = ROWS[:2]
    records, summary = evaluate_gsm8k(lm, rows, batch_size=2, max_new_tokens=48)
    assert summary["questions"] == 2
    for row, record in zip(rows, records, strict=True):
        ids = lm.generate([tok.encode(gsm8k_prompt(row.question), add_bos=True)], max_new_tokens=48)[0]
        assert 0 < record.tokens <= len(ids) <= 48  # the engine stops at the first stop string
        assert record.tokens < 48  # ... which this model writes before the budget
        assert record.generation == cut_at_stop(tok.decode(ids, skip_special=False), (*STOP_SEQUENCES, "</s>"))
        assert record.strict == strict_extract(record.generation)
        assert record.flexible == flexible_extract(record.generation)

    # Bitune with fresh adapters (B = 0) and alpha fixed at 0 decodes exactly like the plain model.
    bcfg = BituneConfig(learn_alpha=False, w_init=0.0)
    trainable = init_trainable(lm.params, lm.cfg, bcfg, jax.random.key(0))
    bitune, _ = evaluate_gsm8k(
        TrainedModel(lm, "bitune", trainable, bitune=bcfg), rows, batch_size=2, max_new_tokens=48
    )
    assert [r.generation for r in bitune] == [r.generation for r in records]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


HUB_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends.", "answer": "Natalia sold 48+24 = 72 clips.\n#### 72"},
    {"question": "Weng earns $12 an hour.", "answer": "12/60 = $0.2 per minute.\n#### 10"},
]


def test_readers(tmp_path):
    rows = read_gsm8k(write_jsonl(tmp_path / "test.jsonl", HUB_ROWS))
    assert [(r.question, r.answer) for r in rows] == [(h["question"], h["answer"]) for h in HUB_ROWS]
    assert rows[1].where == f"{tmp_path / 'test.jsonl'}:2"
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(HUB_ROWS), tmp_path / "test-00000-of-00001.parquet")
    parquet = read_gsm8k(tmp_path / "test-00000-of-00001.parquet")
    assert [(r.question, r.answer) for r in parquet] == [(r.question, r.answer) for r in rows]
    assert parquet[1].where == f"{tmp_path / 'test-00000-of-00001.parquet'}:row 1"


def test_reader_errors_name_file_row_and_key(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [HUB_ROWS[0], {"question": "q"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'answer'"):
        read_gsm8k(bad)
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'question' must be str, got int"):
        read_gsm8k(write_jsonl(bad, [{"question": 3, "answer": "#### 3"}]))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_gsm8k(tmp_path / "nope.jsonl")
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist([{"question": "q", "solution": "#### 1"}]), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"a.parquet:row 0: missing field 'answer'"):
        read_gsm8k(tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([HUB_ROWS[0], {"question": "q", "answer": None}]), tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b.parquet:row 1: field 'answer' must be str, got NoneType"):
        read_gsm8k(tmp_path / "b.parquet")
    (tmp_path / "c.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"c.parquet: not a readable Parquet file"):
        read_gsm8k(tmp_path / "c.parquet")


@pytest.mark.integration
def test_command_line_on_a_model_directory(tmp_path, capsys):
    from bitune_jax.checkpoints.hf import save_hf
    from bitune_jax.eval.gsm8k import main

    lm = tiny_lm()
    save_hf(tmp_path / "model", lm.cfg, lm.params)
    lm.tokenizer.save_hf(tmp_path / "model")
    data = write_jsonl(tmp_path / "test.jsonl", HUB_ROWS * 2)
    argv = ["--pretrained", str(tmp_path / "model"), "--data", str(data), "--limit", "3", "--max-new-tokens", "8"]
    summary = main([*argv, "--out", str(tmp_path / "out" / "results.jsonl")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary and summary["questions"] == 3
    lines = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    records, want = evaluate_gsm8k(lm, read_gsm8k(data)[:3], max_new_tokens=8)
    assert lines[0] == {"summary": want} and [x["generation"] for x in lines[1:]] == [r.generation for r in records]
