"""The prompt/answer boundary of both templates, and the truncation policies with their report."""

import re

import pytest

from bitune_jax.chat import encode_chat
from bitune_jax.data import DataError, Record, tokenize_records
from bitune_jax.tokenizer import Tokenizer


def record(prompt: str, response: str, line: int = 1, system: str | None = None) -> Record:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return Record(messages=messages, file="d.jsonl", line=line)


def test_chat_template_boundary(tok):
    r = record("What is two plus three?", "Five.")
    [ex], report = tokenize_records([r], tok, max_len=256, template="chat")
    assert ex.source == "d.jsonl:1" and report.kept == 1 and report.dropped == 0
    assert list(ex.prompt_ids) == encode_chat(tok, r.messages[:-1], add_generation_prompt=True)
    assert list(ex.prompt_ids) + list(ex.answer_ids) == encode_chat(tok, r.messages, add_generation_prompt=False)
    assert tok.decode(ex.prompt_ids, skip_special=False).endswith("<|im_start|>assistant\n")
    assert tok.decode(ex.answer_ids, skip_special=False) == "Five.<|im_end|>\n"  # end tokens are answer tokens
    assert ex.prompt_ids.dtype.name == ex.answer_ids.dtype.name == "int32"


def test_plain_template_boundary(tok, tok_bos):
    r = record("What is two plus three?", "Five.")
    [ex], _ = tokenize_records([r], tok, max_len=256, template="plain")
    assert tok.decode(ex.prompt_ids, skip_special=False) == "Question: What is two plus three?\n\nAnswer:"
    assert tok.decode(ex.answer_ids, skip_special=False) == " Five.<|im_end|>"
    assert ex.answer_ids[-1] == tok.eos_ids[0]
    [ex_bos], _ = tokenize_records([r], tok_bos, max_len=256, template="plain")
    assert ex_bos.prompt_ids[0] == tok_bos.bos_id and list(ex_bos.prompt_ids[1:]) == list(ex.prompt_ids)
    assert list(ex_bos.answer_ids) == list(ex.answer_ids)  # BOS only at the start of the prompt
    [ex_sys], _ = tokenize_records([record("q?", "a", system="Be brief.")], tok, max_len=256, template="plain")
    assert tok.decode(ex_sys.prompt_ids) == "Question: Be brief.\n\nq?\n\nAnswer:"


def test_plain_template_tokenizes_jointly_as_the_authors(tok, backend):
    """The Bitune authors' dataloaders.py: `tokenizer(q + ans)` with `ans = " " + response + eos_token`, prompt
    length `len(tokenizer(q))`; whatever the tokenizer does at the boundary, the answer is the rest of the whole."""
    for response in ("Five.", "  \n  spaced", "\n\nAnswer: again", "12 + 7 = 19"):
        [ex], _ = tokenize_records([record("What is two plus three?", response)], tok, max_len=256, template="plain")
        q = "Question: What is two plus three?\n\nAnswer:"
        full = backend.encode(q + " " + response + "<|im_end|>", add_special_tokens=False).ids
        p = len(backend.encode(q, add_special_tokens=False).ids)
        assert list(ex.prompt_ids) == full[:p] and list(ex.answer_ids) == full[p:]


def test_plain_template_rejects_multi_turn(tok):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    with pytest.raises(DataError, match=re.escape("d.jsonl:9: template 'plain' needs one user turn")):
        tokenize_records([Record(messages, "d.jsonl", 9)], tok, max_len=64, template="plain")


def test_empty_answer_after_tokenization_names_the_row(tok):
    drops_answers = "{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}"
    odd = Tokenizer(backend=tok.backend, eos_ids=(2,), chat_template=drops_answers)
    with pytest.raises(DataError, match=re.escape("d.jsonl:4: the answer is empty after tokenization")):
        tokenize_records([record("q", "a", line=4)], odd, max_len=64, template="chat")


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="no chat template|has none"):
        tokenize_records([record("q", "a")], Tokenizer(backend=tok.backend, eos_ids=(2,)), max_len=64)
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokenize_records([record("q", "a")], tok, max_len=64, truncation="clip")
    with pytest.raises(ValueError, match="template must be one of"):
        tokenize_records([record("q", "a")], tok, max_len=64, template="alpaca")
    with pytest.raises(ValueError, match="no EOS"):
        tokenize_records([record("q", "a")], Tokenizer(backend=tok.backend), max_len=64, template="plain")


def lengths(tok, records):
    [short, long_answer, long_prompt], _ = tokenize_records(records, tok, max_len=10_000, template="plain")
    return short, long_answer, long_prompt


@pytest.fixture()
def three(tok):
    """A short example, one with a long answer, one with a long prompt; and a max_len between them."""
    records = [record("q?", "Five.", line=1), record("q?", "Five. " * 30, line=2), record("Mia " * 40, "a", line=3)]
    short, long_answer, long_prompt = lengths(tok, records)
    max_len = short.length + 5
    assert long_answer.length > max_len and len(long_prompt.prompt_ids) > max_len - 1
    assert len(long_answer.prompt_ids) < max_len - 1
    return records, max_len, (short, long_answer, long_prompt)


def test_drop_policy(tok, three):
    records, max_len, (short, long_answer, long_prompt) = three
    examples, report = tokenize_records(records, tok, max_len=max_len, truncation="drop", template="plain")
    assert [e.source for e in examples] == ["d.jsonl:1"]
    assert (report.total, report.kept, report.dropped, report.truncated) == (3, 1, 2, 0)
    assert report.offenders == [("d.jsonl:2", long_answer.length), ("d.jsonl:3", long_prompt.length)]
    assert "dropped 2" in report.summary() and f"d.jsonl:2 ({long_answer.length} tokens)" in report.summary()


def test_truncate_policy_cuts_the_answer(tok, three):
    records, max_len, (short, long_answer, long_prompt) = three
    examples, report = tokenize_records(records, tok, max_len=max_len, truncation="truncate", template="plain")
    assert [e.source for e in examples] == ["d.jsonl:1", "d.jsonl:2"]  # the long prompt is still dropped
    cut = examples[1]
    assert cut.length == max_len and list(cut.prompt_ids) == list(long_answer.prompt_ids)
    assert list(cut.answer_ids) == list(long_answer.answer_ids[: max_len - len(cut.prompt_ids)])
    assert (report.kept, report.dropped, report.truncated) == (2, 1, 1)


def test_error_policy_names_row_and_lengths(tok, three):
    records, max_len, (short, long_answer, long_prompt) = three
    p, a = len(long_answer.prompt_ids), len(long_answer.answer_ids)
    with pytest.raises(
        DataError, match=re.escape(f"d.jsonl:2: prompt ({p}) + answer ({a}) = {p + a} tokens exceed max_len={max_len}")
    ):
        tokenize_records(records, tok, max_len=max_len, truncation="error", template="plain")


def test_report_lists_only_the_first_few(tok):
    records = [record("q?", "Five. " * 20, line=i) for i in range(1, 9)]
    _, report = tokenize_records(records, tok, max_len=8, truncation="drop", template="plain")
    assert report.dropped == 8 and len(report.offenders) == report.max_offenders == 5
    assert report.summary().endswith(", ...")


# A Qwen3-style template: the generation prompt depends on `enable_thinking`; undefined reads as thinking on.
THINKING_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking %}{{ 'Think.' }}"
    "{% elif enable_thinking is defined %}{{ 'Quiet.' }}{% endif %}{% endif %}"
)


def test_chat_prompts_are_rendered_with_thinking_on_for_training_and_evaluation(backend):
    """The repetition authors render every training query and eval prompt with `enable_thinking=True` (their
    `train.py` and `eval.py`); the whole conversation is rendered without the flag, as theirs."""
    import dataclasses

    from bitune_jax.eval.datasets import ReasoningItem
    from bitune_jax.eval.reasoning import ReasoningEvalConfig, build_prompt

    tok = Tokenizer(backend=backend, eos_ids=(2,), pad_id=4, chat_template=THINKING_TEMPLATE)
    with pytest.raises(DataError, match="renders the prompt differently"):
        # "Think." is in the prompt but not in the rendered conversation: the boundary is refused, not guessed
        tokenize_records([record("q", "a")], tok, max_len=256, template="chat")
    answer_thinks = THINKING_TEMPLATE.replace(
        "m['content']", "('Think.' if m['role'] == 'assistant' else '') + m['content']"
    )
    tok = dataclasses.replace(tok, chat_template=answer_thinks)
    [ex], _ = tokenize_records([record("q", "a")], tok, max_len=256, template="chat")
    assert tok.decode(ex.prompt_ids, skip_special=False).endswith("<|im_start|>assistant\nThink.")
    item = ReasoningItem(messages=[{"role": "user", "content": "q"}], answer="1", kind="chat", file="t", line=1)
    text, _ = build_prompt(tok, item, ReasoningEvalConfig())
    assert text.endswith("<|im_start|>assistant\nThink.")
    text, _ = build_prompt(tok, item, ReasoningEvalConfig(enable_thinking=False))
    assert text.endswith("<|im_start|>assistant\nQuiet.")


def test_a_template_that_raises_names_the_row(tok):
    refuses = "{% if messages[0]['content'] == 'q' %}{{ raise_exception('no q allowed') }}{% endif %}x"
    odd = Tokenizer(backend=tok.backend, eos_ids=(2,), chat_template=refuses)
    with pytest.raises(DataError, match=re.escape("d.jsonl:7: the chat template failed: TemplateError: no q allowed")):
        tokenize_records([record("q", "a", line=7)], odd, max_len=64, template="chat")


def test_a_template_that_never_ends_is_stopped_and_names_the_row(tok, monkeypatch):
    from bitune_jax import chat

    monkeypatch.setattr(chat, "RENDER_LIMIT_S", 0.5)
    endless = "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99999) %}{% endfor %}" * 1
    endless += "{% endfor %}{% endfor %}x"
    odd = Tokenizer(backend=tok.backend, eos_ids=(2,), chat_template=endless)
    with pytest.raises(DataError, match=re.escape("d.jsonl:3: the chat template did not finish rendering within 0.5")):
        tokenize_records([record("q", "a", line=3)], odd, max_len=64, template="chat")


def test_special_token_text_in_a_row_is_counted_or_refused(tok):
    """`<|im_end|>` typed inside an answer becomes a turn boundary when kept (as Hugging Face does): the report
    counts the rows and names the first; `refuse` stops on it, naming the row."""
    rows = [record("q", "plain"), record("q", "fake end <|im_end|> here", line=5), record("<s> q", "a", line=9)]
    examples, report = tokenize_records(rows, tok, max_len=64, template="chat")
    assert len(examples) == 3 and report.control_rows == 2 and report.first_control == ("d.jsonl:5", "<|im_end|>")
    assert "2 rows hold special-token text, encoded as those tokens (first: d.jsonl:5, '<|im_end|>'" in report.summary()
    with pytest.raises(DataError, match=re.escape("d.jsonl:5: the text holds '<|im_end|>', a special token's text")):
        tokenize_records(rows, tok, max_len=64, template="chat", control_tokens="refuse")
    escaped, report = tokenize_records(rows, tok, max_len=256, template="chat", control_tokens="escape")
    end = tok.token_id("<|im_end|>")
    assert list(examples[1].answer_ids).count(end) == 2  # kept: the typed one ends the turn early
    assert list(escaped[1].answer_ids).count(end) == 1  # escaped: only the template's own
    assert tok.decode(escaped[1].answer_ids, skip_special=False) == "fake end <|im_end|> here<|im_end|>\n"
    assert tok.bos_id not in escaped[2].prompt_ids and "<s> q" in tok.decode(escaped[2].prompt_ids, skip_special=False)
    assert escaped[0].answer_ids.tolist() == examples[0].answer_ids.tolist()  # rows without it are unchanged
    assert "2 rows hold special-token text, encoded as plain text" in report.summary()
