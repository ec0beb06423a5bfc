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

What a checkpoint holds decides the model: full weights replace the base's; PEFT adapters are merged into the base
(exactly the adapted model's logits, to float rounding); Bitune's adapters and mixing coefficients score and
generate through the mixed prompt cache, with the prompt/answer boundary at lm-eval's context/continuation split,
as the authors' harness does (`prompt_lengths = len(context)`). Requests are scored in batches ordered by length
(rows and widths rounded up so few programs compile); `generate_until` decodes each batch in one jitted program
and cuts the text at the first stop string.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    import lm_eval.models  # noqa: F401  the built-in models first: lm-eval loads them only into an empty registry
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("bitune_jax.eval.harness needs lm-evaluation-harness: pip install -e '.[eval]'") from e

import bitune_jax as bj
from bitune_jax.bitune import BituneConfig
from bitune_jax.eval.multiple_choice import bitune_scorer, lm_scorer, score_continuations
from bitune_jax.eval.reasoning import ReasoningEvalConfig, bitune_generate_fn, lm_generate_fn
from bitune_jax.peft import merge
from bitune_jax.train.checkpointing import Checkpointer
from bitune_jax.train.spec import RunSpec

WIDTH_MULTIPLE = 16  # scored sequence widths are rounded up to this


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a training workdir's newest checkpoint adds to its base model."""

    spec: RunSpec
    trainable: Any  # full weights, PEFT adapters, or Bitune's adapter sets and mixing weights
    step: int


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> TrainedRun:
    """A checkpoint of a bitune_jax run, the newest unless `step` names one (its config comes from the checkpoint
    itself)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{workdir}: not a bitune_jax run directory (no checkpoints/ in it)")
    with Checkpointer(directory, async_save=False) as ckpt:
        if step is None:
            step = ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(f"{directory}: no checkpoint saved yet")
        elif step not in ckpt.all_steps():
            raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (saved: {ckpt.all_steps()})")
        state, meta = ckpt.restore(step)
    if "config" not in meta:
        raise ValueError(f"{directory} (step {step}): the checkpoint holds no run config")
    trainable = state["trainable"] if isinstance(state, dict) else state[1]  # TrainState as orbax stored it
    return TrainedRun(RunSpec.from_config(meta["config"]), trainable, step)


def _check_fits(trained: TrainedRun, expected: Any, where: str) -> None:
    got = jax.tree.map(np.shape, trained.trainable)
    want = jax.tree.map(np.shape, expected)
    if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(got) != jax.tree.leaves(want):
        raise ValueError(f"{where}: the checkpoint's {trained.spec.objective} weights do not fit this model")


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
        trained = load_run(run, None if step is None else int(step)) if run else None
        if pretrained is None:
            if trained is None:
                raise ValueError("model_args need pretrained=<preset | HF directory | .gguf> or run=<workdir>")
            pretrained = trained.spec.model.name
        self.lm = bj.load(str(pretrained), dtype=dtype, attn_impl=attn_impl)
        if self.lm.tokenizer is None:
            raise ValueError(f"{pretrained}: lm-eval sends text; this model has no tokenizer")
        self.batch_size_ = int(batch_size) if str(batch_size).isdigit() else 8  # "auto" is not measured here
        self._max_length = int(max_length) if max_length else self.lm.cfg.max_seq_len
        if self._max_length > self.lm.cfg.max_seq_len:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {self.lm.cfg.max_seq_len}")
        self.max_gen_toks, self.add_bos, self.seed = int(max_gen_toks), bool(add_bos), int(seed)
        self.bitune: tuple[Any, BituneConfig] | None = None  # (trainable, config) when scoring through Bitune
        if trained is not None:
            self._apply(trained, f"{run} (step {trained.step})")

    def _apply(self, trained: TrainedRun, where: str) -> None:
        from bitune_jax.train.loop import objective_from_config

        objective = objective_from_config(trained.spec, self.lm.cfg)
        expected, _ = objective.split(self.lm.params, jax.random.key(0))
        _check_fits(trained, expected, where)
        as_model = lambda t: jax.tree.map(lambda x, like: jnp.asarray(x, like.dtype), t, expected)  # noqa: E731
        if objective.kind == "full":
            self.lm = dataclasses.replace(self.lm, params=as_model(trained.trainable))
        elif objective.kind == "peft":
            self.lm = dataclasses.replace(
                self.lm, params=merge(self.lm.params, as_model(trained.trainable), objective.peft)
            )
        else:
            self.bitune = (as_model(trained.trainable), objective.bitune)

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

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        for key, members in groups.items():
            kwargs = json.loads(key)
            until = kwargs.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 0.0)) > 0
            cfg = ReasoningEvalConfig(
                n=1,
                temperature=float(kwargs.get("temperature", 0.0)) if sample else 0.0,
                top_p=float(kwargs.get("top_p", 1.0)) if sample else 1.0,
                max_new_tokens=max_new,
                seed=self.seed,
                batch_size=self.batch_size_,
            )
            generate = self._generate_fn(cfg)
            keep = self.max_length - max_new
            prompts = {i: self.tok_encode(requests[i].args[0])[-keep:] for i in members}
            order = sorted(members, key=lambda i: -len(prompts[i]))
            for start in range(0, len(order), self.batch_size_):
                chunk = order[start : start + self.batch_size_]
                for i, ids in zip(chunk, generate([prompts[i] for i in chunk], self.seed)):
                    text = self.tok_decode(ids)
                    for stop in until:
                        text = text.split(stop)[0]
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
        if self.bitune is None:
            scorer = lm_scorer(self.lm)
        else:
            scorer = bitune_scorer(self.lm.params, self.bitune[0], self.lm.cfg, self.bitune[1], self.lm.compute)
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

    def _generate_fn(self, cfg: ReasoningEvalConfig):
        if self.bitune is None:
            return lm_generate_fn(self.lm, cfg)
        trainable, bcfg = self.bitune
        return bitune_generate_fn(
            self.lm.params,
            trainable,
            self.lm.cfg,
            bcfg,
            cfg,
            eos_ids=self.lm.eos_ids,
            pad_id=self.lm.pad_id,
            compute=self.lm.compute,
        )


def main() -> None:
    """lm-eval's command line, with `--model bitune_jax` registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
