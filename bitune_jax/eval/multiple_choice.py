"""Multiple choice by log-likelihood (docs/method.md C): score every choice as a continuation of the prompt.

For an item with prompt tokens `p` and a choice's continuation tokens `c_1..c_m`, the choice's score is
`sum_j log P(c_j | p, c_<j)` (accuracy: the argmax of the sum is the label) and its length-normalized forms, the
mean per token (`accuracy_norm`) and the sum per character of the continuation text (`accuracy_norm_char`, what
lm-evaluation-harness calls acc_norm). Nothing is generated.

Prompt formats (`MCConfig.prompt_format`):
  * `"plain"` (default): the text `template.format(question=...)`, by default `question + "\\nAnswer:"`, encoded
    with the tokenizer's own BOS policy (or `add_bos`); each continuation is `" " + choice`. The Bitune authors'
    tasks in their exact format: `bitune_jax.eval.bitune_mc` (`read_bitune_task`, `AUTHORS_MC`).
  * `"chat"`: the question as one user message rendered with the chat template and the generation prompt; each
    continuation is the choice text (no leading space, no end-of-turn token).
Tokenization follows lm-evaluation-harness: prompt and prompt + continuation are encoded as whole texts and the
continuation is the tail past the prompt's tokens (so merges across the boundary behave as in running text); when
the prompt's tokens are not a prefix of the whole, the continuation is encoded on its own.

Batching: all choices of `batch_items` items go through one forward, right-padded (positions -1 for padding);
items go longest first, and widths and row counts are rounded up (`width_multiple`, `rows_multiple`) so few
programs get compiled. An item whose every choice is one token (letters, single-word answers) needs no row per
choice: the row that predicts a continuation's first token reads only the prompt, so one row per item gives every
choice's log P from the same next-token distribution (lm-evaluation-harness caches one-token continuations the
same way); `batch_items` such items share one forward.
The model is an `eval.model.TrainedModel` (or a plain `LM`): `answer_scorer` and `next_token_scorer` score with
its weights (PEFT adapters applied), or for a Bitune model read the prompt with both streams and score the
continuation over the mixed cache, i.e. an `SFTBatch` with prompt = prompt tokens and answer = choice tokens (row
`P - 1 + j` predicts token j). `score_choices` scores items with either.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.api import LM
from bitune_jax.bitune import bitune_logits
from bitune_jax.chat import render_chat
from bitune_jax.data.batch import SFTBatch
from bitune_jax.eval.datasets import MCItem
from bitune_jax.eval.model import TrainedModel
from bitune_jax.models.compute import Compute
from bitune_jax.models.transformer import forward
from bitune_jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class MCConfig:
    prompt_format: Literal["plain", "chat"] = "plain"
    template: str = "{question}\nAnswer:"  # plain format only
    add_bos: bool | None = None  # plain format: None follows the tokenizer, True always (the Bitune harness)
    batch_items: int = 8  # items whose choices share one forward
    width_multiple: int = 8  # sequence widths rounded up to this
    rows_multiple: int = 8  # rows per forward rounded up to this (with dummy rows)

    def __post_init__(self):
        if self.prompt_format not in ("plain", "chat"):
            raise ValueError(f"prompt_format must be 'plain' or 'chat', got {self.prompt_format!r}")
        if min(self.batch_items, self.width_multiple, self.rows_multiple) < 1:
            raise ValueError("batch_items, width_multiple and rows_multiple must be >= 1")


class Encoded(NamedTuple):
    prompt: list[int]
    continuations: list[list[int]]  # one per choice, never empty
    texts: list[str]  # the continuation texts scored (for per-character normalization)


@dataclasses.dataclass
class MCScore:
    """One item's scores, one entry per choice."""

    label: int
    logprob_sum: list[float]
    n_tokens: list[int]
    n_chars: list[int]

    @property
    def logprob_mean(self) -> list[float]:
        return [s / n for s, n in zip(self.logprob_sum, self.n_tokens)]

    @property
    def pred(self) -> int:
        return int(np.argmax(self.logprob_sum))

    @property
    def pred_norm(self) -> int:
        return int(np.argmax(self.logprob_mean))

    @property
    def pred_norm_char(self) -> int:
        return int(np.argmax([s / n for s, n in zip(self.logprob_sum, self.n_chars)]))


def _split(tok: Tokenizer, prompt_text: str, cont_text: str, add_bos: bool | None) -> list[int]:
    ctx = tok.encode(prompt_text, add_bos=add_bos)
    whole = tok.encode(prompt_text + cont_text, add_bos=add_bos)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return whole[len(ctx) :]
    return tok.encode(cont_text, add_bos=False)


def encode_item(tok: Tokenizer, item: MCItem, cfg: MCConfig = MCConfig()) -> Encoded:
    """Prompt token ids and each choice's continuation token ids (see the module docstring for the formats)."""
    if cfg.prompt_format == "chat":
        prompt_text = render_chat(tok, [{"role": "user", "content": item.question}], add_generation_prompt=True)
        texts, add_bos = list(item.choices), False
    else:
        prompt_text = cfg.template.format(question=item.question)
        texts, add_bos = [" " + c for c in item.choices], cfg.add_bos
    prompt = tok.encode(prompt_text, add_bos=add_bos)
    if not prompt:
        raise ValueError(f"{item.where}: the prompt encodes to no tokens")
    return Encoded(prompt, [_split(tok, prompt_text, t, add_bos) for t in texts], texts)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@jax.jit
def next_token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """`logits [B, T, V]`, `tokens [B, T]` -> `[B, T]`: log P(tokens[:, t + 1] | ..t); the last column is 0."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.pad(picked, ((0, 0), (0, 1)))


def _longest_first(encoded: Sequence[Encoded], indices: Sequence[int], batch_items: int):
    """`indices` in chunks of `batch_items`, longest item first (as lm-evaluation-harness orders them), so each
    forward holds rows of similar length and little of it is padding; scores are keyed by item index, so the order
    never shows in the results."""
    order = sorted(indices, key=lambda i: -max(len(encoded[i].prompt) + len(c) for c in encoded[i].continuations))
    return [order[start : start + batch_items] for start in range(0, len(order), batch_items)]


def _collect(items: Sequence[MCItem], encoded: Sequence[Encoded], sums: dict[tuple[int, int], float]):
    scores = []
    for i, (item, enc) in enumerate(zip(items, encoded)):
        scores.append(
            MCScore(
                label=item.label,
                logprob_sum=[sums[(i, c)] for c in range(len(item.choices))],
                n_tokens=[len(t) for t in enc.continuations],
                n_chars=[len(t) for t in enc.texts],
            )
        )
    return scores


def summarize(scores: Sequence[MCScore]) -> dict[str, Any]:
    """Accuracy by the sum, by the per-token mean and by the per-character sum; chance for comparison."""
    return {
        "items": len(scores),
        "accuracy": float(np.mean([s.pred == s.label for s in scores])),
        "accuracy_norm": float(np.mean([s.pred_norm == s.label for s in scores])),
        "accuracy_norm_char": float(np.mean([s.pred_norm_char == s.label for s in scores])),
        "chance": float(np.mean([1.0 / len(s.n_tokens) for s in scores])),
    }


# (batch, (prompt_width, answer_width)) -> `[rows, answer_width]` each: log P of every answer token (0 past the
# answer) and whether it is the argmax there (True past the answer).
AnswerScorer = Callable[[SFTBatch, tuple[int, int]], tuple[jax.Array, jax.Array]]


def _answer_scores(at_rows: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`at_rows [B, W, V]` logits at the answer rows -> (log P of each target, whether it is the argmax)."""
    logp = jax.nn.log_softmax(at_rows.astype(jnp.float32), axis=-1)
    picked = jnp.where(mask, jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], 0.0)
    return picked, jnp.where(mask, jnp.argmax(at_rows, axis=-1) == targets, True)


def _plain_logits(params, adapters, batch: SFTBatch, cfg, peft, rows: jax.Array, compute: Compute) -> jax.Array:
    """`[batch, len(rows[0]), vocab]`: the plain (or PEFT-adapted) forward, unembedding only `rows`."""
    logits, _ = forward(
        params,
        batch.tokens,
        cfg,
        positions=batch.positions,
        adapters=adapters,
        peft=peft,
        logit_rows=rows,
        compute=compute,
    )
    return logits


@functools.partial(jax.jit, static_argnames=("cfg", "peft", "answer_width", "compute"))
def _plain_answer_scores(params, adapters, batch: SFTBatch, cfg, peft, answer_width: int, compute: Compute):
    """One forward with the weights (and PEFT adapters, if any); only the answer rows are unembedded."""
    rows, targets, mask = batch.answer_rows(answer_width)
    return _answer_scores(_plain_logits(params, adapters, batch, cfg, peft, rows, compute), targets, mask)


@functools.partial(jax.jit, static_argnames=("cfg", "bcfg", "prompt_width", "answer_width", "compute"))
def _bitune_answer_scores(base, trainable, batch: SFTBatch, cfg, bcfg, prompt_width, answer_width, compute):
    """Every answer token scored over the Bitune mixed prompt cache."""
    logits = bitune_logits(base, trainable, batch, cfg, bcfg, prompt_width=prompt_width, compute=compute)
    rows, targets, mask = batch.answer_rows(answer_width)
    return _answer_scores(jnp.take_along_axis(logits, rows[..., None], axis=1), targets, mask)


# (batch, (prompt_width, answer_width)) -> `[rows, vocab]`: log P of the token after each row's prompt.
NextTokenScorer = Callable[[SFTBatch, tuple[int, int]], jax.Array]


def _first_row(batch: SFTBatch) -> jax.Array:
    """`[batch, 1]`: the row that predicts the first answer token (`P - 1`)."""
    return batch.answer_rows(1)[0]


@functools.partial(jax.jit, static_argnames=("cfg", "peft", "compute"))
def _plain_next_token(params, adapters, batch: SFTBatch, cfg, peft, compute: Compute):
    """One row unembedded per sequence."""
    logits = _plain_logits(params, adapters, batch, cfg, peft, _first_row(batch), compute)
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)


@functools.partial(jax.jit, static_argnames=("cfg", "bcfg", "prompt_width", "compute"))
def _bitune_next_token(base, trainable, batch: SFTBatch, cfg, bcfg, prompt_width, compute: Compute):
    """The Bitune answer pass's first row over the mixed prompt cache."""
    rows = _first_row(batch)
    logits = bitune_logits(
        base, trainable, batch, cfg, bcfg, prompt_width=prompt_width, compute=compute, logit_rows=rows
    )
    return jax.nn.log_softmax(logits[:, 0], axis=-1)


def answer_scorer(model: LM | TrainedModel) -> AnswerScorer:
    """The `AnswerScorer` of a `TrainedModel` or a plain `LM` (what `score_continuations` takes)."""
    m = TrainedModel.of(model)
    params, cfg, compute = m.lm.params, m.lm.cfg, m.lm.compute
    if m.kind == "bitune":
        return lambda batch, widths: _bitune_answer_scores(params, m.trainable, batch, cfg, m.bitune, *widths, compute)
    return lambda batch, widths: _plain_answer_scores(params, m.adapters, batch, cfg, m.peft, widths[1], compute)


def next_token_scorer(model: LM | TrainedModel) -> NextTokenScorer:
    """The `NextTokenScorer` of a `TrainedModel` or a plain `LM` (what `score_next_tokens` takes)."""
    m = TrainedModel.of(model)
    params, cfg, compute = m.lm.params, m.lm.cfg, m.lm.compute
    if m.kind == "bitune":
        return lambda batch, widths: _bitune_next_token(params, m.trainable, batch, cfg, m.bitune, widths[0], compute)
    return lambda batch, widths: _plain_next_token(params, m.adapters, batch, cfg, m.peft, compute)


def _padded_batch(pairs, pad_id: int, max_len: int, rows_multiple: int, width_multiple: int) -> SFTBatch:
    """`(context, continuation)` rows padded to a multiple of `rows_multiple` with dummy rows, the width rounded up
    to `width_multiple`, so batches of similar size share one program."""
    padded = list(pairs) + [([pad_id], [pad_id])] * (_round_up(len(pairs), rows_multiple) - len(pairs))
    longest = max(len(c) + len(a) for c, a in padded)
    width = min(_round_up(longest, width_multiple), max(longest, max_len))
    return SFTBatch.from_pairs(padded, pad_id, max_len, seq_len=width)


def score_continuations(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    scorer: AnswerScorer,
    *,
    pad_id: int,
    max_len: int,
    rows_multiple: int = 8,
    width_multiple: int = 8,
) -> list[tuple[float, bool]]:
    """`(sum of log P(continuation | context), whether every continuation token is the argmax)` for each
    `(context ids, continuation ids)` pair, in one forward: the rows padded to a multiple of `rows_multiple` with
    dummy rows and the width rounded up to `width_multiple`, so batches of similar size share one program."""
    batch = _padded_batch(pairs, pad_id, max_len, rows_multiple, width_multiple)
    logp, greedy = map(np.asarray, scorer(jax.tree.map(jnp.asarray, batch), batch.widths()))
    return [(float(logp[r, : len(c)].sum()), bool(greedy[r, : len(c)].all())) for r, (_, c) in enumerate(pairs)]


def score_next_tokens(
    contexts: Sequence[tuple[Sequence[int], Sequence[int]]],
    scorer: NextTokenScorer,
    *,
    pad_id: int,
    max_len: int,
    rows_multiple: int = 8,
    width_multiple: int = 8,
) -> list[list[float]]:
    """`log P(token | context)` for each candidate token of each `(context ids, candidate token ids)` pair, from one
    row per context in one forward (padded as in `score_continuations`)."""
    pairs = [(list(c), [int(t[0])]) for c, t in contexts]
    batch = _padded_batch(pairs, pad_id, max_len, rows_multiple, width_multiple)
    logp = np.asarray(scorer(jax.tree.map(jnp.asarray, batch), batch.widths()))
    return [[float(logp[r, t]) for t in tokens] for r, (_, tokens) in enumerate(contexts)]


def _score_items(
    items,
    encoded,
    scorer: AnswerScorer,
    cfg: MCConfig,
    pad_id: int,
    max_len: int,
    next_token: NextTokenScorer | None = None,
):
    """Every choice's summed log P: items whose choices are all one token from one row each (with `next_token`),
    the rest from one row per choice."""
    sums: dict[tuple[int, int], float] = {}
    one_token = [next_token is not None and all(len(c) == 1 for c in e.continuations) for e in encoded]
    shared = [i for i, one in enumerate(one_token) if one]
    for chunk in _longest_first(encoded, shared, cfg.batch_items):
        scored = score_next_tokens(
            [(encoded[i].prompt, [c[0] for c in encoded[i].continuations]) for i in chunk],
            next_token,
            pad_id=pad_id,
            max_len=max_len,
            rows_multiple=cfg.rows_multiple,
            width_multiple=cfg.width_multiple,
        )
        for i, logprobs in zip(chunk, scored):
            sums.update({(i, c): v for c, v in enumerate(logprobs)})
    per_choice = [i for i, one in enumerate(one_token) if not one]
    for chunk in _longest_first(encoded, per_choice, cfg.batch_items):
        rows = [(i, c, cont) for i in chunk for c, cont in enumerate(encoded[i].continuations)]
        scored = score_continuations(
            [(encoded[i].prompt, cont) for i, _, cont in rows],
            scorer,
            pad_id=pad_id,
            max_len=max_len,
            rows_multiple=cfg.rows_multiple,
            width_multiple=cfg.width_multiple,
        )
        for (i, c, _), (logprob, _) in zip(rows, scored):
            sums[(i, c)] = logprob
    scores = _collect(items, encoded, sums)
    return scores, summarize(scores)


def score_choices(
    model: LM | TrainedModel, items: Sequence[MCItem], cfg: MCConfig = MCConfig()
) -> tuple[list[MCScore], dict[str, Any]]:
    """Score every choice of every item with a `TrainedModel` or a plain `LM`: `(per-item scores, summary)`."""
    m = TrainedModel.of(model)
    if m.lm.tokenizer is None:
        raise ValueError("multiple-choice scoring encodes text; load the model with its tokenizer")
    encoded = [encode_item(m.lm.tokenizer, item, cfg) for item in items]
    return _score_items(items, encoded, answer_scorer(m), cfg, m.lm.pad_id, m.lm.cfg.max_seq_len, next_token_scorer(m))
