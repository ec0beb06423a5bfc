"""Records -> `(prompt_ids, answer_ids)` with a counted, reported truncation policy.

The loss of every trainer in this repo is computed on answer tokens only (docs/method.md A: "everything after the
generation prompt, template end tokens included"), so the one thing tokenization must get exactly right is the
boundary between prompt and answer. Two renderings:
  * `"chat"`: the model's own chat template (`chat.encode_prompt_answer`), the prompt rendered with thinking on
    (`THINKING`); the answer ends with the template's end tokens (e.g. `<|im_end|>\\n`), which are trained on, so
    the model learns to stop.
  * `"plain"`: the Bitune paper's format, prompt `"Question: {instruction}\\n\\nAnswer:"` (BOS first if the tokenizer
    adds one) and answer `" " + response` followed by EOS. A system message, if any, is put before the question
    as its own paragraph. As in the authors' code, the whole text is tokenized at once and the prompt is its first
    `len(encode(prompt))` tokens (so a tokenizer that merged across the boundary would move it, as it does there).

Over-long examples follow a policy from the config, and every decision is counted in a `TruncationReport` that the
trainer logs: silently losing or cutting data changes what an experiment measures.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bitune_jax.chat import encode_prompt_answer
from bitune_jax.data.records import DataError, Record
from bitune_jax.tokenizer import Tokenizer

TEMPLATES = ("chat", "plain")
POLICIES = ("drop", "truncate", "error")
PLAIN_PROMPT = "Question: {instruction}\n\nAnswer:"
# Chat prompts are rendered with thinking on, for training and evaluation alike, as the repetition authors render
# every query (`enable_thinking=True`); templates that do not read the flag (SmolLM2's) render the same text.
THINKING = {"enable_thinking": True}


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedExample:
    """One training row before batching: the prompt, the answer (the loss targets), and where it came from."""

    prompt_ids: np.ndarray  # [P] int32, P >= 1
    answer_ids: np.ndarray  # [A] int32, A >= 1
    source: str  # `file:line` of the record

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


@dataclasses.dataclass
class TruncationReport:
    """What the truncation policy did. `kept` includes the `truncated` examples; `kept + dropped == total`."""

    policy: str
    max_len: int
    total: int = 0
    kept: int = 0
    dropped: int = 0
    truncated: int = 0
    offenders: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # first few (`file:line`, length)
    max_offenders: int = 5
    control_rows: int = 0  # rows whose text holds a special token's text (`keep`, `escape`)
    control_policy: str = "those tokens"  # how they were encoded, for the summary
    first_control: tuple[str, str] | None = None  # (`file:line`, the token's text) of the first such row

    def add_offender(self, source: str, length: int) -> None:
        if len(self.offenders) < self.max_offenders:
            self.offenders.append((source, length))

    def summary(self) -> str:
        """One line for the training log."""
        text = (
            f"{self.total} examples, max_len={self.max_len}, policy={self.policy!r}: kept {self.kept} "
            f"({self.truncated} truncated), dropped {self.dropped}"
        )
        if self.offenders:
            text += "; over max_len: " + ", ".join(f"{s} ({n} tokens)" for s, n in self.offenders)
            if self.dropped + self.truncated > len(self.offenders):
                text += ", ..."
        if self.control_rows:
            where, token = self.first_control
            text += (
                f"; {self.control_rows} rows hold special-token text, encoded as {self.control_policy} (first: "
                f"{where}, {token!r}; data.control_tokens sets keep, escape or refuse)"
            )
        return text


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters around an escaped special token's index
_ESCAPED = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


@dataclasses.dataclass
class _EscapingTokenizer(Tokenizer):
    """`data.control_tokens=escape`: the row's special-token texts were replaced by `_OPEN index _CLOSE` before
    rendering, and come back here as the plain text they are (`<|im_end|>` as `<`, `|`, `im`, ...), while the
    template's own special tokens stay tokens."""

    controls: tuple[str, ...] = ()

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        parts = _ESCAPED.split(text)  # text, index, text, index, ..., text
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                ids += super().encode(part, add_bos=False) if part else []
            else:
                self.backend.encode_special_tokens = True  # this one call reads special-token text as text
                try:
                    ids += self.backend.encode(self.controls[int(part)], add_special_tokens=False).ids
                finally:
                    self.backend.encode_special_tokens = False
        add = self.add_bos if add_bos is None else add_bos
        return [self.bos_id, *ids] if add and self.bos_id is not None and ids[:1] != [self.bos_id] else ids


def _escaped(tok: Tokenizer, record: Record, control: re.Pattern, controls: tuple[str, ...]):
    """The record with its special-token texts marked for `_EscapingTokenizer`, and that tokenizer."""
    if any(_OPEN in m["content"] or _CLOSE in m["content"] for m in record.messages):
        raise DataError(f"{record.where}: holds U+E000/U+E001, which data.control_tokens='escape' reserves")
    index = {c: i for i, c in enumerate(controls)}
    messages = [
        {**m, "content": control.sub(lambda x: f"{_OPEN}{index[x.group(0)]}{_CLOSE}", m["content"])}
        for m in record.messages
    ]
    fields = {f.name: getattr(tok, f.name) for f in dataclasses.fields(Tokenizer)}
    return dataclasses.replace(record, messages=messages), _EscapingTokenizer(**fields, controls=controls)


def plain_prompt_answer(
    tok: Tokenizer, messages: Sequence[Mapping[str, str]], where: str
) -> tuple[list[int], list[int]]:
    """The Bitune paper's `Question: ... Answer:` rendering of a single-turn conversation."""
    roles = [m["role"] for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError(
            f"{where}: template 'plain' needs one user turn then the assistant (optionally after a "
            f"system message), got roles {roles}; use template 'chat' for multi-turn data"
        )
    if not tok.eos_ids:
        raise ValueError("template 'plain' ends each answer with EOS, but this tokenizer has no EOS id")
    instruction = messages[-2]["content"]
    if roles[0] == "system":
        instruction = f"{messages[0]['content']}\n\n{instruction}"
    prompt_text = PLAIN_PROMPT.format(instruction=instruction)
    # The authors' dataloaders.py: `tokenizer(q + " " + response + eos_token)`, prompt length `len(tokenizer(q))`
    # (BOS counted where the tokenizer adds one). EOS is appended as an id: Hugging Face splits special-token strings
    # out of the text before tokenizing it, so the two agree.
    full = tok.encode(prompt_text + " " + messages[-1]["content"]) + [tok.eos_ids[0]]
    p = len(tok.encode(prompt_text))
    return full[:p], full[p:]


def encode_record(
    tok: Tokenizer, record: Record, template: str, template_kwargs: Mapping[str, Any] | None = None
) -> tuple[list[int], list[int]]:
    """`(prompt_ids, answer_ids)` of one record, untruncated."""
    if template == "chat":
        try:
            prompt, answer = encode_prompt_answer(
                tok, record.messages, {**THINKING, **(template_kwargs or {})}, **(template_kwargs or {})
            )
        except ValueError as e:
            raise DataError(f"{record.where}: {e}") from e
    elif template == "plain":
        prompt, answer = plain_prompt_answer(tok, record.messages, record.where)
    else:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if not prompt:
        raise DataError(f"{record.where}: the prompt is empty after tokenization (training needs >= 1 prompt token)")
    if not answer:
        raise DataError(f"{record.where}: the answer is empty after tokenization; there is nothing to train on")
    return prompt, answer


CONTROL_TOKEN_POLICIES = ("keep", "escape", "refuse")


def tokenize_records(
    records: Sequence[Record],
    tok: Tokenizer,
    *,
    max_len: int,
    truncation: str = "drop",
    template: str = "chat",
    template_kwargs: Mapping[str, Any] | None = None,
    control_tokens: str = "keep",
) -> tuple[list[TokenizedExample], TruncationReport]:
    """Tokenize `records` and apply the truncation policy to examples longer than `max_len` (prompt + answer).

    `control_tokens`: what a special token's text inside a row (`<|im_end|>` in an answer) does. `"keep"` encodes it
    as that token, as Hugging Face tokenizers and both papers' pipelines do, and counts the rows in the report;
    `"escape"` encodes it as the plain text it is (counted too); `"refuse"` raises, naming the row and the token.

    `truncation`:
      * `"drop"`: skip the example (what the Bitune paper does);
      * `"truncate"`: cut the answer to fit; an example whose prompt alone exceeds `max_len - 1` (no room for one
        answer token) is still dropped;
      * `"error"`: raise, naming `file:line` and both lengths.
    """
    if truncation not in POLICIES:
        raise ValueError(f"truncation must be one of {POLICIES}, got {truncation!r}")
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "chat" and not tok.chat_template:
        raise ValueError(
            "template 'chat' needs the tokenizer's chat template, and this tokenizer has none; use template 'plain'"
        )
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 (one prompt and one answer token), got {max_len}")
    if control_tokens not in CONTROL_TOKEN_POLICIES:
        raise ValueError(f"control_tokens must be one of {CONTROL_TOKEN_POLICIES}, got {control_tokens!r}")
    report = TruncationReport(policy=truncation, max_len=max_len)
    report.control_policy = "plain text" if control_tokens == "escape" else "those tokens"
    controls = tok.control_strings()  # one pass per text, however many special tokens the vocabulary has
    control = re.compile("|".join(map(re.escape, sorted(controls, key=len, reverse=True)))) if controls else None
    examples = []
    for record in records:
        match = next((m for x in record.messages if control and (m := control.search(x["content"]))), None)
        found = None if match is None else match.group(0)
        if found is not None:
            if control_tokens == "refuse":
                raise DataError(
                    f"{record.where}: the text holds {found!r}, a special token's text, which would be encoded as "
                    "that token (data.control_tokens='refuse'; 'keep' encodes it, as Hugging Face does)"
                )
            report.control_rows += 1
            report.first_control = report.first_control or (record.where, found)
        if found is not None and control_tokens == "escape":
            escaped, escaping = _escaped(tok, record, control, controls)
            prompt, answer = encode_record(escaping, escaped, template, template_kwargs)
        else:
            prompt, answer = encode_record(tok, record, template, template_kwargs)
        report.total += 1
        length = len(prompt) + len(answer)
        if length > max_len:
            if truncation == "error":
                raise DataError(
                    f"{record.where}: prompt ({len(prompt)}) + answer ({len(answer)}) = {length} tokens "
                    f"exceed max_len={max_len}; raise max_len or set truncation to 'drop' or 'truncate'"
                )
            report.add_offender(record.where, length)
            if truncation == "drop" or len(prompt) > max_len - 1:
                report.dropped += 1
                continue
            answer = answer[: max_len - len(prompt)]
            report.truncated += 1
        report.kept += 1
        examples.append(
            TokenizedExample(
                prompt_ids=np.asarray(prompt, np.int32), answer_ids=np.asarray(answer, np.int32), source=record.where
            )
        )
    return examples, report
