"""GSM8K 0-shot exactly as the Bitune authors' harness task scores it, for plain and Bitune models.

    python -m bitune_jax.eval.gsm8k --run WORKDIR --data test.jsonl [--limit N] [--out results.jsonl]
    python -m bitune_jax.eval.gsm8k --pretrained NAME_OR_DIR --data test-00000-of-00001.parquet

The authors (github dkopi/Bitune, commit 7beb9f1) run their vendored lm-evaluation-harness task
`lm_eval/tasks/gsm8k/gsm8k.yaml`; every rule here cites the file it comes from (paths under their
`lm-evaluation-harness/`):
  * prompt (`gsm8k.yaml` doc_to_text, 0 shots): `"Question: {question}\\n\\nAnswer:"`, encoded with BOS forced
    (`models/huggingface.py`: `self.add_bos_token = True`, so `tokenizer.encode(add_special_tokens=True)`);
  * greedy decoding (`do_sample: false`, `temperature: 0.0`) of up to 256 tokens (`max_gen_toks`);
  * the text is cut at the stop strings, the task's `until` followed by the tokenizer's EOS text
    (`generate_until`: `until.append(eos)`, then `s = s.split(term)[0]` for each term in that order);
  * two filters (`filters/extraction.py` RegexFilter, then take_first): strict-match and flexible-extract;
  * `exact_match` (`api/metrics.py`: Hugging Face evaluate's metric) with the task's regexes_to_ignore and
    ignore_case, per question against the whole gold `answer`, then the mean.

Decoding stops at the model's EOS ids or after 256 tokens; the stop strings are cut from the text afterwards. Greedy
decoding of a row does not depend on when it stops, so the text before the first stop string equals what the
harness's stopping criteria leave. Differences from the harness: BOS is `Tokenizer.bos_id` whenever one is known
(a Hugging Face tokenizer whose post-processor adds none, such as SmolLM2's or Qwen's, gets none there: pass
`add_bos=False`), a prompt too long for the context is an error rather than left-truncated, and the text is
decoded by `tokenizers` without Hugging Face's `clean_up_tokenization_spaces`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitune_jax.api import LM
from bitune_jax.data.records import DataError, jsonl_rows
from bitune_jax.engine import Request
from bitune_jax.eval.datasets import row_field
from bitune_jax.eval.model import TrainedModel
from bitune_jax.eval.reasoning import GenerateFn, ReasoningEvalConfig, generate_fn, write_generations_jsonl
from bitune_jax.tokenizer import Tokenizer
from bitune_jax.train.restore import load_model

STOP_SEQUENCES = ("Question:", "</s>", "<|im_end|>", "<|end_of_text|>")  # gsm8k.yaml generation_kwargs.until
STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"  # gsm8k.yaml filter "strict-match"
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"  # gsm8k.yaml filter "flexible-extract", group_select -1
REGEXES_TO_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")  # gsm8k.yaml metric_list exact_match, in this order
FALLBACK = "[invalid]"  # RegexFilter's default fallback
MAX_GEN_TOKS = 256  # models/huggingface.py max_gen_toks


@dataclasses.dataclass(frozen=True)
class GSM8KRow:
    question: str
    answer: str  # the whole solution, ending `#### <number>` in the Hub's layout
    where: str  # file:line (JSONL) or file:row i (Parquet)


@dataclasses.dataclass
class GSM8KRecord:
    index: int
    source: str
    question: str
    gold: str
    generation: str  # decoded and cut at the stop strings
    strict: str
    strict_correct: bool
    flexible: str
    flexible_correct: bool
    tokens: int  # generated tokens, EOS included


def gsm8k_prompt(question: str) -> str:
    """gsm8k.yaml `doc_to_text: "Question: {{question}}\\n\\nAnswer:"` (YAML `\\n` is a newline), 0 shots."""
    return f"Question: {question}\n\nAnswer:"


def _regex_filter(text: str, pattern: str, group_select: int) -> str:
    """filters/extraction.py `RegexFilter.apply` on one response: `findall`, the `group_select`-th match; a tuple
    (several groups) gives its first non-empty group; stripped; FALLBACK when nothing matches. (Both patterns here
    always have a non-empty group in a match, so their `[...][0]` cannot fail.)"""
    match = re.findall(pattern, text)
    if not match:
        return FALLBACK
    match = match[group_select]
    if isinstance(match, tuple):
        match = [m for m in match if m][0]
    return match.strip()


def strict_extract(text: str) -> str:
    """The "strict-match" filter: the number after the FIRST `#### ` (group_select 0)."""
    return _regex_filter(text, STRICT_PATTERN, 0)


def flexible_extract(text: str) -> str:
    """The "flexible-extract" filter: the LAST number-like run of the text (group_select -1)."""
    return _regex_filter(text, FLEXIBLE_PATTERN, -1)


def normalize(text: str) -> str:
    """What `exact_match` compares (Hugging Face evaluate's exact_match, used by api/metrics.py): each of
    REGEXES_TO_IGNORE removed with `re.sub`, in order, then `np.char.lower` (ignore_case; numpy's lowering and its
    string arrays, which drop trailing NULs, exactly as the metric); ignore_punctuation is false."""
    for pattern in REGEXES_TO_IGNORE:
        text = re.sub(pattern, "", text)
    return str(np.char.lower(np.asarray([text]))[0])


def is_match(pred: str, gold_answer_text: str) -> bool:
    """`exact_match(predictions=[pred], references=[gold])` of one question: the same normalization on both sides
    (the gold is the whole `answer`; `(?s).*#### ` leaves its final number)."""
    return normalize(pred) == normalize(gold_answer_text)


def cut_at_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """models/huggingface.py `generate_until`: `for term in until: if term: s = s.split(term)[0]`, in list order
    (the harness appends the EOS text after the task's strings)."""
    for term in stops:
        if term:
            text = text.split(term)[0]
    return text


def read_gsm8k(path: str | pathlib.Path) -> list[GSM8KRow]:
    """Rows `{"question", "answer"}` of a JSONL file (`file:line` in errors) or of a Parquet file such as the Hub's
    `main/test-00000-of-00001.parquet` (`file:row i`, 0-based, in errors; needs pyarrow)."""
    path = pathlib.Path(path)
    if path.suffix == ".parquet":
        if not path.exists():
            raise FileNotFoundError(f"{path}: data file not found")
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from e
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
        rows = [(f"{path}:row {i}", row) for i, row in enumerate(table.to_pylist())]
        if not rows:
            raise DataError(f"{path}: no rows")
    else:
        rows = [(f"{file}:{line}", row) for file, line, row in jsonl_rows(path)]
    return [GSM8KRow(row_field(row, "question", w), row_field(row, "answer", w), w) for w, row in rows]


def evaluate_gsm8k_generate_fn(
    generate: GenerateFn,
    tok: Tokenizer,
    rows: Sequence[GSM8KRow],
    *,
    max_new_tokens: int = MAX_GEN_TOKS,
    add_bos: bool = True,
) -> tuple[list[GSM8KRecord], dict[str, Any]]:
    """Prompt (BOS forced), generate greedily (each row stops at EOS or the first stop string), decode (special
    tokens kept, as the harness's `tok_decode`), cut at the stop strings and the tokenizer's EOS text, extract both
    ways, score: `(records, {"exact_match_strict", "exact_match_flexible", "questions"})`."""
    if not rows:
        raise ValueError("no GSM8K rows to evaluate")
    prompts = [tok.encode(gsm8k_prompt(r.question), add_bos=add_bos) for r in rows]
    outputs = [c.tokens[0] for c in generate([Request(p, max_new_tokens, stop=STOP_SEQUENCES) for p in prompts])]
    eos_text = tok.decode([tok.eos_ids[0]], skip_special=False) if tok.eos_ids else ""
    stops = (*STOP_SEQUENCES, eos_text)
    records = []
    for i, (row, ids) in enumerate(zip(rows, outputs, strict=True)):
        text = cut_at_stop(tok.decode(ids, skip_special=False), stops)
        strict, flexible = strict_extract(text), flexible_extract(text)
        records.append(
            GSM8KRecord(
                index=i,
                source=row.where,
                question=row.question,
                gold=row.answer,
                generation=text,
                strict=strict,
                strict_correct=is_match(strict, row.answer),
                flexible=flexible,
                flexible_correct=is_match(flexible, row.answer),
                tokens=len(ids),
            )
        )
    summary = {
        "exact_match_strict": float(np.mean([r.strict_correct for r in records])),
        "exact_match_flexible": float(np.mean([r.flexible_correct for r in records])),
        "questions": len(records),
    }
    return records, summary


def greedy_config(batch_size: int) -> ReasoningEvalConfig:
    return ReasoningEvalConfig(n=1, temperature=0.0, top_p=1.0, batch_size=batch_size)


def evaluate_gsm8k(
    model: LM | TrainedModel,
    rows: Sequence[GSM8KRow],
    *,
    batch_size: int = 8,
    max_new_tokens: int = MAX_GEN_TOKS,
    add_bos: bool = True,
) -> tuple[list[GSM8KRecord], dict[str, Any]]:
    """GSM8K of a `TrainedModel` or a plain `LM` (`reasoning.generate_fn`; a Bitune model decodes from the mixed
    prompt cache, the prompt being the whole context, BOS included, as the authors' harness passes
    `prompt_lengths`): `(records, summary)`."""
    m = TrainedModel.of(model)
    if m.lm.tokenizer is None:
        raise ValueError("GSM8K prompts are text; load the model with its tokenizer")
    generate = generate_fn(m, greedy_config(batch_size))
    return evaluate_gsm8k_generate_fn(generate, m.lm.tokenizer, rows, max_new_tokens=max_new_tokens, add_bos=add_bos)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line; the model is a run's checkpoint on its base (`train.restore.restore_run`: full weights,
    PEFT adapters, or Bitune through the mixed prompt cache) or a pretrained model."""
    p = argparse.ArgumentParser(prog="python -m bitune_jax.eval.gsm8k", description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a bitune_jax training workdir (newest checkpoint unless --step)")
    p.add_argument("--step", type=int)
    p.add_argument("--pretrained", help="preset name, Hugging Face directory or .gguf (default: the run's model)")
    p.add_argument("--data", required=True, help="GSM8K test rows: .jsonl or the Hub's .parquet")
    p.add_argument("--limit", type=int, help="the first N rows only")
    p.add_argument("--out", help="per-question records as JSONL, the summary on the first line")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=MAX_GEN_TOKS)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--attn-impl", default="xla")
    p.add_argument("--no-bos", action="store_true", help="do not force BOS before the prompt")
    args = p.parse_args(argv)
    if not args.run and not args.pretrained:
        p.error("give --run WORKDIR or --pretrained NAME_OR_DIR")
    rows = read_gsm8k(args.data)[: args.limit]
    model = load_model(args.pretrained, args.run, args.step, dtype=args.dtype, attn_impl=args.attn_impl)
    records, summary = evaluate_gsm8k(
        model, rows, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, add_bos=not args.no_bos
    )
    if args.out:
        write_generations_jsonl(records, args.out, summary)  # any dataclass records: the summary, then one a line
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
