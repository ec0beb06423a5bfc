"""Reasoning eval by sampling (docs/method.md A): n generations per question, the last `\\boxed{}` scored by exact
match.

`evaluate` takes the model (an `eval.model.TrainedModel` or a plain `LM`; `generate_fn` decodes with its weights,
PEFT adapters applied, or for a Bitune model from the mixed prompt cache) and is a thin shell over
`evaluate_generate_fn`, which takes any `GenerateFn` and does the rest: prompts, batching, extraction, records and
the summary. Both extractors of `answers` are run, so a report can give the authors' number beside ours.

Prompts: each item's last user message gets the answer-format suffix of its kind (`SUFFIXES`: the authors' strings,
docs/method.md A: AIME asks for the final integer in `\\boxed{}`, GPQA for the letter), then the whole conversation
is rendered with the model's chat template and the generation prompt, thinking on (`enable_thinking=True`, as
the authors' `eval.py`).

Decoding and seeds: every question is one engine request (`engine.Engine`) whose `n` samples share one prefill;
`batch_size` slots decode at once, each sample to its own EOS or budget. Question `q` samples with seed
`cfg.seed + q` (recorded beside each generation) and its sample `j` draws token `t` with
`fold_in(fold_in(key(seed), j), t)`, so a sample is reproducible from its seed and index alone, whatever the
slot count or the other questions.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bitune_jax.api import LM
from bitune_jax.chat import render_chat
from bitune_jax.engine import BituneDecoder, Completion, Engine, PlainDecoder, Request
from bitune_jax.eval.answers import is_correct, is_correct_original, last_boxed, last_boxed_original
from bitune_jax.eval.datasets import ReasoningItem
from bitune_jax.eval.metrics import avg_at_n, mean_pass_at_k_unbiased, pass_at_k_first
from bitune_jax.eval.model import TrainedModel
from bitune_jax.sampling import SamplingConfig
from bitune_jax.tokenizer import Tokenizer

SUFFIXES: Mapping[str, str] = {  # the authors' strings (their eval.py), appended to the query
    "aime": "\n\nAnswer the query and place the final integer inside \\boxed{} in your response. For example "
    "\\boxed{42}.",
    "gpqa": "\n\nAnswer the query and place the letter of chosen solution inside \\boxed{} in your response. For "
    "example \\boxed{A}.",
    "chat": "",  # chat rows are asked as written
}

# requests -> their completions, in request order (an engine's `run`)
GenerateFn = Callable[[Sequence[Request]], list[Completion]]


@dataclasses.dataclass(frozen=True)
class ReasoningEvalConfig:
    """How to sample. Defaults are a toy-scale setting; `authors(kind)` gives the paper's protocol."""

    n: int = 1  # samples per question
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 8  # decode slots: samples decoded at once
    ks: tuple[int, ...] = (1,)  # pass@k to report; each k <= n
    suffix: str | None = None  # None: SUFFIXES[item.kind]
    chat_template: bool = True  # False: the prompt is the messages' contents joined by blank lines
    enable_thinking: bool = True  # passed to the chat template, as the authors' eval.py renders every prompt
    width_multiple: int = 32  # prompt widths rounded up to this (bounds prefill compiles)

    def __post_init__(self):
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"n, batch_size and max_new_tokens must be >= 1, got {self.n}, {self.batch_size}, {self.max_new_tokens}"
            )
        bad = [k for k in self.ks if not 1 <= k <= self.n]
        if bad:
            raise ValueError(f"every k in ks must be in [1, n={self.n}], got {bad}")
        SamplingConfig(self.temperature, self.top_p, self.top_k)  # validates the sampling settings

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)

    @classmethod
    def authors(cls, kind: str, **overrides) -> ReasoningEvalConfig:
        """docs/method.md A: temperature 0.6, top-p 0.95, up to 30,000 new tokens; 16 samples (AIME) or 4 (GPQA)."""
        if kind not in ("aime", "gpqa"):
            raise ValueError(f"the authors' protocol is defined for 'aime' and 'gpqa', got {kind!r}")
        n = {"aime": 16, "gpqa": 4}[kind]
        return cls(**{"n": n, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 30_000, "ks": (1, n), **overrides})


@dataclasses.dataclass
class QuestionRecord:
    """Everything about one question, in the order a person reads it."""

    index: int
    source: str  # file:line
    gold: str
    prompt: str  # the rendered prompt text
    generations: list[str]
    answers: list[str | None]  # last_boxed
    correct: list[bool]  # is_correct (strip, exact)
    answers_original: list[str | None]  # last_boxed_original
    correct_original: list[bool]  # is_correct_original (==)
    lengths: list[int]  # generated tokens, EOS included
    terminated: list[bool]  # ended with EOS within max_new_tokens
    seeds: list[int]  # the seed each sample was drawn with (its question's)


def build_prompt(tok: Tokenizer, item: ReasoningItem, cfg: ReasoningEvalConfig) -> tuple[str, list[int]]:
    """The prompt text and its token ids: the suffix appended to the last message, then the chat template."""
    suffix = SUFFIXES[item.kind] if cfg.suffix is None else cfg.suffix
    messages = [dict(m) for m in item.messages]
    messages[-1]["content"] += suffix
    if cfg.chat_template:
        text = render_chat(tok, messages, add_generation_prompt=True, enable_thinking=cfg.enable_thinking)
        return text, tok.encode(text, add_bos=False)
    text = "\n\n".join(m["content"] for m in messages)
    return text, tok.encode(text)


def summarize(records: Sequence[QuestionRecord], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """avg@n, pass@k (unbiased and first-k), the authors' avg@n, mean generated length, terminated fraction."""
    correct = np.asarray([r.correct for r in records], bool)
    lengths = np.asarray([r.lengths for r in records], float)
    out: dict[str, Any] = {
        "questions": len(records),
        "n": correct.shape[1],
        "avg@n": avg_at_n(correct),
        "avg@n_original": avg_at_n([r.correct_original for r in records]),
    }
    for k in ks:
        out[f"pass@{k}"] = mean_pass_at_k_unbiased(correct, k)
        out[f"pass@{k}_first"] = pass_at_k_first(correct, k)
    out["mean_length"] = float(lengths.mean())
    out["terminated_fraction"] = float(np.mean([r.terminated for r in records]))
    out["estimators"] = (
        "pass@k: unbiased (Chen et al. 2021); pass@k_first: any of the first k samples; "
        "avg@n_original: authors' regex and == comparison"
    )
    return out


def evaluate_generate_fn(
    generate: GenerateFn,
    tok: Tokenizer,
    items: Sequence[ReasoningItem],
    cfg: ReasoningEvalConfig,
    eos_ids: Sequence[int],
    prompts: Sequence[tuple[str, list[int]]] | None = None,
) -> tuple[list[QuestionRecord], dict[str, Any]]:
    """Generate `cfg.n` samples per item, extract, score: `(per-question records, summary)`.

    `prompts` (text, ids), one per item, replace `build_prompt`: the trainer passes the exact rendering it trains on.
    """
    if not items:
        raise ValueError("no items to evaluate")
    if prompts is None:
        prompts = [build_prompt(tok, item, cfg) for item in items]
    elif len(prompts) != len(items):
        raise ValueError(f"{len(prompts)} prompts for {len(items)} items")
    requests = [
        Request(
            ids,
            cfg.max_new_tokens,
            n=cfg.n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=cfg.seed + q,
        )
        for q, (_, ids) in enumerate(prompts)
    ]
    done = generate(requests)
    outputs = {(q, j): (tokens, requests[q].seed) for q, c in enumerate(done) for j, tokens in enumerate(c.tokens)}

    eos = set(eos_ids)
    records = []
    for q, item in enumerate(items):
        samples = [outputs[(q, j)] for j in range(cfg.n)]
        texts = [tok.decode(t) for t, _ in samples]
        answers = [last_boxed(t) for t in texts]
        originals = [last_boxed_original(t) for t in texts]
        records.append(
            QuestionRecord(
                index=q,
                source=item.where,
                gold=item.answer,
                prompt=prompts[q][0],
                generations=texts,
                answers=answers,
                correct=[is_correct(a, item.answer) for a in answers],
                answers_original=originals,
                correct_original=[is_correct_original(a, item.answer) for a in originals],
                lengths=[len(t) for t, _ in samples],
                terminated=[bool(t) and t[-1] in eos for t, _ in samples],
                seeds=[s for _, s in samples],
            )
        )
    return records, summarize(records, cfg.ks)


def generate_fn(model: LM | TrainedModel, cfg: ReasoningEvalConfig) -> GenerateFn:
    """An engine's `run` over a `TrainedModel` or a plain `LM`: its weights (PEFT adapters unmerged), or a Bitune
    model's decoding from the mixed prompt cache; `cfg.batch_size` slots."""
    m = TrainedModel.of(model)
    lm = m.lm
    if m.kind == "bitune":
        decoder, weights = BituneDecoder(lm.cfg, m.bitune, compute=lm.compute), (lm.params, m.trainable)
    else:
        decoder, weights = PlainDecoder(lm.cfg, peft=m.peft, compute=lm.compute), (lm.params, m.adapters)
    engine = Engine(
        decoder,
        weights,
        slots=cfg.batch_size,
        eos_ids=tuple(lm.eos_ids),
        tokenizer=lm.tokenizer,
        prompt_multiple=cfg.width_multiple,
    )
    return engine.run


def evaluate(
    model: LM | TrainedModel,
    items: Sequence[ReasoningItem],
    cfg: ReasoningEvalConfig = ReasoningEvalConfig(),
    *,
    prompts: Sequence[tuple[str, list[int]]] | None = None,
) -> tuple[list[QuestionRecord], dict[str, Any]]:
    """Reasoning eval of a `TrainedModel` or a plain `LM` (`generate_fn`): `(records, summary)`; `prompts` as in
    `evaluate_generate_fn`."""
    m = TrainedModel.of(model)
    if m.lm.tokenizer is None:
        raise ValueError("the reasoning eval renders prompts as text; load the model with its tokenizer")
    return evaluate_generate_fn(generate_fn(m, cfg), m.lm.tokenizer, items, cfg, m.lm.eos_ids, prompts)


def write_generations_jsonl(
    records: Sequence[QuestionRecord], path: str | pathlib.Path, summary: Mapping[str, Any] | None = None
) -> pathlib.Path:
    """One JSON object per question (prompt, generations, answers, flags, lengths), UTF-8 and unescaped so the
    text reads as written; with `summary`, a first line `{"summary": {...}}`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if summary is not None:
            f.write(json.dumps({"summary": dict(summary)}, ensure_ascii=False) + "\n")
        for r in records:
            f.write(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n")
    return path
