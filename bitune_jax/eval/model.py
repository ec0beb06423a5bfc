"""The model every eval takes: a base `LM` and what training added beside it, whatever the objective trained.

A full fine-tune holds its own weights, a PEFT run adapters beside a frozen base, a Bitune run two adapter sets and
mixing weights; the evals (multiple choice, reasoning, GSM8K, the lm-eval model) take this one object and read its
`kind` in one place each (`multiple_choice.answer_scorer`, `reasoning.generate_fn`), so no caller branches on it.
A plain `LM` is a model nothing was trained beside. Restoring one from a run's workdir: `train.restore`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from bitune_jax.api import LM
from bitune_jax.bitune import BituneConfig
from bitune_jax.models.transformer import Params
from bitune_jax.peft import PeftConfig, merge


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """`lm` holds the weights every forward starts from (a full fine-tune's trained weights, else the frozen base),
    the tokenizer and how forwards run; `trainable` what a PEFT or Bitune run trained beside that base."""

    lm: LM
    kind: Literal["full", "peft", "bitune"] = "full"
    trainable: Params | None = None  # PEFT adapters, or Bitune's adapter sets and mixing weights
    peft: PeftConfig | None = None  # PEFT runs
    bitune: BituneConfig | None = None  # Bitune runs
    step: int | None = None  # the checkpoint's step, for a restored run

    def __post_init__(self):
        needs = {"full": (), "peft": ("trainable", "peft"), "bitune": ("trainable", "bitune")}
        if self.kind not in needs:
            raise ValueError(f"unknown kind {self.kind!r}; choose full, peft or bitune")
        missing = [name for name in needs[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} model needs {' and '.join(missing)}")
        if self.kind == "full" and self.trainable is not None:
            raise ValueError("a full fine-tune's trained weights are `lm.params`; trainable must be None")

    @classmethod
    def of(cls, model: LM | TrainedModel) -> TrainedModel:
        """`model` itself, or a plain `LM` as a model nothing was trained beside."""
        return model if isinstance(model, TrainedModel) else cls(model)

    @property
    def adapters(self) -> Params | None:
        """The PEFT adapters a plain forward applies (None: the weights alone)."""
        return self.trainable if self.kind == "peft" else None

    def merged(self) -> LM:
        """A plain `LM` equal to this model: the trained weights, or the base with the PEFT adapters folded in
        (the same logits to float rounding), for export or an eval that needs a plain forward."""
        if self.kind == "bitune":
            raise ValueError(
                "a Bitune model has no merged form: its prompt is read by two adapter sets whose KV caches are "
                "mixed; score and generate it through the mixed cache (multiple_choice.score_choices, "
                "reasoning.evaluate, gsm8k.evaluate_gsm8k, the lm-eval model)"
            )
        if self.kind == "peft":
            return dataclasses.replace(self.lm, params=merge(self.lm.params, self.trainable, self.peft))
        return self.lm
