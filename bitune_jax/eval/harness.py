"""lm-evaluation-harness over bitune_jax models: `--model bitune_jax`, any task, plain, PEFT or Bitune.

    python -m bitune_jax.eval.harness --model bitune_jax --model_args pretrained=DIR_OR_GGUF --tasks piqa
    python -m bitune_jax.eval.harness --model bitune_jax --model_args run=WORKDIR,add_bos=True --tasks arc_easy
    lm_eval.simple_evaluate(model=BituneJaxLM(pretrained=...), tasks=[...])

(`lm_eval` itself does not know third-party models; `python -m bitune_jax.eval.harness` is its command line with
this model registered.) `model_args`: `pretrained` (a shipped preset name, a Hugging Face directory or a `.gguf`
file), `run` (a bitune_jax training workdir: its newest checkpoint, or the one `step` names, on top of its model;
`pretrained` defaults to the run's model), `dtype`, `attn_impl`, `batch_size`, `max_length` (default: the model's
context), `max_gen_toks`, `add_bos` (default False, as lm-eval's `hf` model; the Bitune authors' harness forces
it: `add_bos=True`) and `seed` (sampling).

The model is `train.restore.load_model`'s, so what a checkpoint holds decides it as in every eval: full weights
replace the base's; PEFT adapters score and generate beside the base, as the run trained them; Bitune's adapters
and mixing coefficients score and generate through the mixed prompt cache, with the prompt/answer boundary at
lm-eval's context/continuation split, as the authors' harness does (`prompt_lengths = len(context)`). Requests
are scored in batches ordered by length (rows and widths rounded up so few programs compile); `generate_until`
decodes each batch in one jitted program and cuts the text at the first stop string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

try:
    import lm_eval.models  # noqa: F401  the built-in models first: lm-eval loads them only into an empty registry
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("bitune_jax.eval.harness needs lm-evaluation-harness: pip install -e '.[eval]'") from e

from bitune_jax.engine import Request
from bitune_jax.eval.multiple_choice import answer_scorer, score_continuations
from bitune_jax.eval.reasoning import ReasoningEvalConfig, generate_fn
from bitune_jax.train.restore import load_model

WIDTH_MULTIPLE = 16  # scored sequence widths are rounded up to this


@register_model("bitune_jax")
class BituneJaxLM(TemplateLM):
    """A bitune_jax model behind lm-eval's `LM` interface (see the module docstring for `model_args`)."""

    def __init__(
        self,
        pretrained: str | None = None,
        run: str | None = None,
        step: int | None = None,
        dtype: str = "float32",
        attn_impl: str = "xla",
        batch_size: int | str = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos: bool = False,
        seed: int = 0,
        **_unused: Any,  # lm-eval passes device, max_batch_size, ...
    ) -> None:
        super().__init__()
        if not pretrained and not run:
            raise ValueError("model_args need pretrained=<preset | HF directory | .gguf> or run=<workdir>")
        self.model = load_model(pretrained, run, None if step is None else int(step), dtype=dtype, attn_impl=attn_impl)
        self.lm = self.model.lm  # tokenizer, ids and context (a PEFT or Bitune run's base)
        if self.lm.tokenizer is None:
            raise ValueError(f"{pretrained or run}: lm-eval sends text; this model has no tokenizer")
        self.batch_size_ = int(batch_size) if str(batch_size).isdigit() else 8  # "auto" is not measured here
        self._max_length = int(max_length) if max_length else self.lm.cfg.max_seq_len
        if self._max_length > self.lm.cfg.max_seq_len:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {self.lm.cfg.max_seq_len}")
        self.max_gen_toks, self.add_bos, self.seed = int(max_gen_toks), bool(add_bos), int(seed)

    # ------------------------------------------------------------------------------------------ lm-eval's hooks
    @property
    def eot_token_id(self) -> int:
        return self.lm.eos_ids[0]

    @property
    def prefix_token_id(self) -> int:
        bos = self.lm.tokenizer.bos_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        add = self.add_bos if add_special_tokens is None else add_special_tokens
        return self.lm.tokenizer.encode(string, add_bos=add)

    def tok_decode(self, tokens: Sequence[int], **kwargs) -> str:
        return self.lm.tokenizer.decode(list(tokens))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = [self._fit(list(ctx), list(cont)) for _, ctx, cont in requests]
        return self.score_pairs(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, req in enumerate(requests):
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(req.args[0]),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((list(ctx), list(cont)))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self.score_pairs(windows)):
            totals[i] += logprob
        return totals

    def generate_until(self, requests_, disable_tqdm: bool = False) -> list[str]:
        """Each group of equal generation settings decoded by the engine, each request to its EOS or first stop
        string (lm-eval's `until`), then cut there as the harness's hf model does."""
        out: list[str | None] = [None] * len(requests_)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests_):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        for key, members in groups.items():
            kwargs = json.loads(key)
            until = kwargs.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 0.0)) > 0
            temperature = float(kwargs.get("temperature", 0.0)) if sample else 0.0
            top_p = float(kwargs.get("top_p", 1.0)) if sample else 1.0
            cfg = ReasoningEvalConfig(n=1, temperature=temperature, top_p=top_p, batch_size=self.batch_size_)
            keep = self.max_length - max_new  # the prompt's last `keep` tokens ([-0:] would keep them all)
            if max_new < 1 or keep < 1:
                raise ValueError(
                    f"generate_until: max_gen_toks={max_new} must be >= 1 and leave room for the prompt in "
                    f"max_length={self.max_length}; lower max_gen_toks or raise max_length"
                )
            requests = [
                Request(
                    self.tok_encode(requests_[i].args[0])[-keep:],
                    max_new,
                    temperature=temperature,
                    top_p=top_p,
                    seed=self.seed + i,
                    stop=tuple(s for s in until if s),
                )
                for i in members
            ]
            for i, done in zip(members, generate_fn(self.model, cfg)(requests)):
                text = self.tok_decode(done.tokens[0])
                for stop in until:
                    text = text.split(stop)[0] if stop else text  # an empty `until` (an EOS that decodes to "")
                out[i] = text
        return out  # type: ignore[return-value]

    # -------------------------------------------------------------------------------------------------- scoring
    def _fit(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate the context so context + continuation fit `max_length` (as lm-eval's hf model does)."""
        over = len(ctx) + len(cont) - self.max_length
        if over > 0:
            if over >= len(ctx):
                raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_length={self.max_length}")
            ctx = ctx[over:]
        return ctx, cont

    def score_pairs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """`(sum of log P(continuation | context), whether every continuation token is the argmax)` per pair."""
        scorer = answer_scorer(self.model)
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for start in range(0, len(order), self.batch_size_):
            chunk = order[start : start + self.batch_size_]
            scored = score_continuations(
                [pairs[i] for i in chunk],
                scorer,
                pad_id=self.lm.pad_id,
                max_len=self.lm.cfg.max_seq_len,
                rows_multiple=self.batch_size_,
                width_multiple=WIDTH_MULTIPLE,
            )
            for i, value in zip(chunk, scored):
                results[i] = value
        return results  # type: ignore[return-value]


def main() -> None:
    """lm-eval's command line, with `--model bitune_jax` registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
