"""Held-out accuracy during training: the reasoning eval run on the model as it trains, logged beside token accuracy.

The repetition study asks how memorization of the training traces (token accuracy) relates to accuracy on problems
never trained on; this module gives the trainer the second number. Held-out items are records in the training
format (a user turn and a reference response), so the prompt the model is evaluated on is token for token the
prompt it is trained on (`encode_record` with the run's template, docs/method.md A: "training and evaluation use the
same rendering"). The gold answer is the record's `answer` field, else the last `\\boxed{}` of the reference response.

The evals take the live weights as an `eval.model.TrainedModel` (`restore.model_from_state`), the object every eval
of a restored run takes, so the objective decides how it generates (the full model's own weights, the frozen base
with PEFT adapters, or Bitune decoding from the mixed prompt cache) in one place for both.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax

from bitune_jax.api import LM
from bitune_jax.data import DataError, Record, TokenizedExample, encode_record, read_records
from bitune_jax.eval.answers import last_boxed
from bitune_jax.eval.datasets import ReasoningItem
from bitune_jax.eval.mmlu import MMLUItem, check_shots, evaluate_mmlu, read_mmlu
from bitune_jax.eval.reasoning import ReasoningEvalConfig, evaluate, write_generations_jsonl
from bitune_jax.models.transformer import Params
from bitune_jax.tasks import registry as synthetic_tasks
from bitune_jax.train.objectives import Objective
from bitune_jax.train.progress import due
from bitune_jax.train.restore import model_from_state
from bitune_jax.train.spec import EvalSpec, MMLUSpec, RunSpec
from bitune_jax.train.validation_loss import Validation

SUMMARY_KEYS = ("avg@n", "pass@1", "mean_length", "terminated_fraction")  # logged as eval_<key>


def held_out_records(config: RunSpec) -> list[Record]:
    """The eval set `config.eval` names: the synthetic task's disjoint test set, or a local JSONL file."""
    ev = config.eval
    if ev.source == "synthetic":
        records = synthetic_tasks.split(config.data.synthetic)[1]
    elif ev.source == "jsonl":
        if not ev.path:
            raise ValueError(
                "config.eval.path is empty but config.eval.source is 'jsonl': set it to a local JSONL "
                "file of held-out rows in the training format"
            )
        records = read_records(ev.path)
    else:
        raise ValueError(f"config.eval.source must be 'synthetic' or 'jsonl', got {ev.source!r}")
    if ev.num_items:
        records = records[: ev.num_items]
    if not records:
        raise ValueError(f"the eval set ({ev.source} {ev.path}) is empty")
    return records


def gold_answer(record: Record) -> str:
    if "answer" in record.meta:
        return str(record.meta["answer"]).strip()
    if record.messages[-1]["role"] == "assistant":
        boxed = last_boxed(record.messages[-1]["content"])
        if boxed is not None:
            return boxed
    raise DataError(
        f"{record.where}: a held-out row needs an 'answer' field or a reference response with a \\boxed{{}} answer"
    )


@dataclasses.dataclass(frozen=True)
class HeldOutEval:
    """The held-out set, tokenized once, and how to sample on it."""

    items: list[ReasoningItem]
    prompts: list[tuple[str, list[int]]]
    sampling: ReasoningEvalConfig

    @classmethod
    def from_config(cls, config: RunSpec, tok) -> HeldOutEval:
        ev = config.eval
        items, prompts = [], []
        for r in held_out_records(config):
            ids, _ = encode_record(tok, r, config.data.template)
            prompts.append((tok.decode(ids), ids))
            items.append(
                ReasoningItem(
                    messages=list(r.messages[:-1]),
                    answer=gold_answer(r),
                    kind="chat",
                    file=r.file,
                    line=r.line,
                    reference=r.messages[-1]["content"],
                    meta=r.meta,
                )
            )
        sampling = ReasoningEvalConfig(
            n=ev.n,
            temperature=ev.temperature,
            top_p=ev.top_p,
            max_new_tokens=ev.max_new_tokens,
            seed=ev.seed,
            batch_size=ev.batch_size,
        )
        return cls(items, prompts, sampling)

    def run(
        self,
        objective: Objective,
        trainable: Params,
        frozen: Params,
        lm: LM,
        out_path: str | pathlib.Path | None = None,
    ) -> dict[str, Any]:
        """Generate on every item with the current weights; returns the summary, writes generations to `out_path`.

        `lm` supplies the tokenizer, ids and compute setting; its params are not used.
        """
        model = model_from_state(objective, trainable, frozen, lm)
        records, summary = evaluate(model, self.items, self.sampling, prompts=self.prompts)
        if out_path is not None:
            write_generations_jsonl(records, out_path, summary)
        return summary


@dataclasses.dataclass(frozen=True)
class MMLUEval:
    """MMLU forgetting during training: the weights as they train (PEFT adapters merged into the base), scored
    exactly as `bitune_jax.eval.evaluate_mmlu` scores a model. Rows are read, and the few shots checked, at start."""

    test: list[MMLUItem]
    dev: list[MMLUItem]
    shots: int
    batch_size: int

    @classmethod
    def from_spec(cls, spec: MMLUSpec) -> MMLUEval | None:
        if not spec.test:
            return None
        test, dev = read_mmlu(spec.test), read_mmlu(spec.dev)
        test = test[: spec.num_items] if spec.num_items else test
        check_shots(test, dev, spec.shots)
        return cls(test, dev, spec.shots, spec.batch_size)

    def run(self, objective: Objective, trainable: Params, frozen: Params, lm: LM) -> dict[str, float]:
        """`mmlu_macro` (the mean over subjects, the paper's headline) and `mmlu_micro` (over questions), from a
        plain forward (`TrainedModel.merged`: none for Bitune)."""
        plain = model_from_state(objective, trainable, frozen, lm).merged()
        result = evaluate_mmlu(plain, self.test, self.dev, shots=self.shots, batch_size=self.batch_size)
        return {"mmlu_macro": result["mmlu_macro"], "mmlu_micro": result["mmlu_micro"]}


def log_values(summary: dict[str, Any]) -> dict[str, float]:
    return {f"eval_{k}": float(summary[k]) for k in SUMMARY_KEYS if k in summary}


@dataclasses.dataclass(frozen=True)
class RunEvals:
    """The evaluations a run makes between epochs, each None when the config turns it off: held-out generation
    (`eval.every_epochs`), MMLU (`eval.mmlu`) and validation loss (`eval.val_every_epochs`)."""

    spec: EvalSpec
    objective: Objective
    shell: LM  # ids, dtype and tokenizer; no weights
    held_out: HeldOutEval | None
    mmlu: MMLUEval | None
    validation: Validation | None

    @staticmethod
    def read_mmlu(spec: RunSpec) -> MMLUEval | None:
        """MMLU's rows, read and checked (seconds): called before the model loads."""
        return MMLUEval.from_spec(spec.eval.mmlu)

    @classmethod
    def create(
        cls,
        spec: RunSpec,
        shell: LM,
        mmlu: MMLUEval | None,
        val_examples: Sequence[TokenizedExample],
        objective: Objective,
        mesh: jax.sharding.Mesh,
        max_len: int,
        trainable_shardings: Any,
        frozen_shardings: Any,
    ) -> RunEvals:
        held_out = HeldOutEval.from_config(spec, shell.tokenizer) if spec.eval.every_epochs else None
        validation = None
        if val_examples:
            validation = Validation(
                val_examples,
                objective,
                batch_size=spec.data.batch_size,
                pad_id=shell.pad_id,
                multiple=spec.data.pad_multiple,
                max_width=max_len,
                mesh=mesh,
                trainable_shardings=trainable_shardings,
                frozen_shardings=frozen_shardings,
            )
        return cls(spec.eval, objective, shell, held_out, mmlu, validation)

    def run(
        self,
        epoch: int,
        trainable: Params,
        frozen: Params,
        *,
        last: bool = False,
        out_dir: pathlib.Path | None = None,
        say: Callable[[str], None] = print,
    ) -> dict[str, float]:
        """The evaluations due after `epoch` (1-based; 0: before training, held-out and MMLU only), as log values.
        Held-out generations go to `out_dir/epoch_NNNN.jsonl` when `out_dir` is given."""
        values: dict[str, float] = {}
        generate = epoch == 0 or due(epoch, self.spec.every_epochs, last)
        if self.held_out is not None and generate:
            out = None if out_dir is None else out_dir / f"epoch_{epoch:04d}.jsonl"
            held = log_values(self.held_out.run(self.objective, trainable, frozen, self.shell, out))
            say(f"held-out eval after epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in held.items()))
            values.update(held)
        if self.mmlu is not None and generate:
            mmlu = self.mmlu.run(self.objective, trainable, frozen, self.shell)
            say(
                f"MMLU after epoch {epoch} ({len(self.mmlu.test)} questions): macro {mmlu['mmlu_macro']:.4f}, "
                f"micro {mmlu['mmlu_micro']:.4f}"
            )
            values.update(mmlu)
        if self.validation is not None and epoch > 0 and due(epoch, self.spec.val_every_epochs, last):
            val = self.validation.run(trainable, frozen)
            say(
                f"validation after epoch {epoch} ({len(self.validation.batches.examples)} rows): loss "
                f"{val['val_loss']:.4f}, token accuracy {val['val_token_accuracy']:.4f}"
            )
            values.update(val)
        return values
