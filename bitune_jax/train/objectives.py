"""What a run trains and the loss it minimizes: full fine-tuning, PEFT adapters, or Bitune.

Every objective reads the same batches (`data.batch.SFTBatch`: right-padded prompt + answer rows, or a
`PackedBatch` of the same examples end to end) and returns
`(loss, metrics)` from one forward: loss and token accuracy over answer tokens only.
Trainable and frozen parameters are separate pytrees, so freezing, sharding and checkpointing follow the trees.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Literal

import jax

from bitune_jax.bitune import BituneConfig, bitune_loss, init_trainable
from bitune_jax.data.batch import PackedBatch, SFTBatch
from bitune_jax.losses import example_token_loss, hidden_token_loss
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import Params, forward, unembed
from bitune_jax.peft import PeftConfig, init_adapters

if TYPE_CHECKING:
    from bitune_jax.train.spec import RunSpec

Kind = Literal["full", "peft", "bitune"]


@dataclasses.dataclass(frozen=True)
class Objective:
    kind: Kind
    cfg: ModelConfig
    peft: PeftConfig | None = None
    bitune: BituneConfig | None = None
    compute: Compute = Compute()  # dtype, attention implementation, remat, loss chunk, sequence parallelism
    seed: int = 0  # the train step's dropout key is fold_in(key(seed), step): a resumed run draws the same masks
    loss_norm: Literal["per_example", "per_token"] = "per_example"  # both papers: the mean of each example's mean

    def __post_init__(self):
        if self.kind not in ("full", "peft", "bitune"):
            raise ValueError(f"unknown objective kind {self.kind!r}; choose full, peft or bitune")
        if self.kind == "peft" and self.peft is None:
            raise ValueError("objective 'peft' needs a PeftConfig")
        if self.kind == "bitune" and self.bitune is None:
            raise ValueError("objective 'bitune' needs a BituneConfig")

    @classmethod
    def from_spec(cls, spec: RunSpec, cfg: ModelConfig, compute: Compute = Compute()) -> Objective:
        """What a run's spec trains (its kind and adapter settings); `compute` says how the forwards run, which a
        trainer sets from the whole spec and an eval of the trained weights from how it loads them."""
        bitune = BituneConfig(peft=spec.peft, **dataclasses.asdict(spec.bitune))
        return cls(
            kind=spec.objective,
            cfg=cfg,
            peft=spec.peft if spec.objective == "peft" else None,
            bitune=bitune if spec.objective == "bitune" else None,
            compute=compute,
            seed=spec.seed,
            loss_norm=spec.train.loss_norm,
        )

    def split(self, params: Params, key: jax.Array) -> tuple[Params, Params]:
        """`(trainable, frozen)`: the whole model for full fine-tuning, fresh adapters beside a frozen base else."""
        if self.kind == "full":
            return params, {}
        if self.kind == "peft":
            return init_adapters(params, self.peft, key), params
        return init_trainable(params, self.cfg, self.bitune, key), params

    def loss(
        self,
        trainable: Params,
        frozen: Params,
        batch: SFTBatch | PackedBatch,
        *,
        prompt_width: int | None = None,
        answer_width: int | None = None,
        dropout_key: jax.Array | None = None,
    ):
        """`dropout_key`: training (LoRA dropout, if the PEFT config asks for it); None: a deterministic forward."""
        if self.kind == "bitune":
            return bitune_loss(
                trainable,
                frozen,
                batch,
                self.cfg,
                self.bitune,
                prompt_width=prompt_width,
                answer_width=answer_width,
                compute=self.compute,
                dropout_key=dropout_key,
                per_token=self.loss_norm == "per_token",
            )
        params, adapters = (trainable, None) if self.kind == "full" else (frozen, trainable)
        packed = isinstance(batch, PackedBatch)
        if not packed:
            rows, targets, mask = batch.answer_rows(answer_width)
        hidden, _ = forward(
            params,
            batch.tokens,
            self.cfg,
            positions=batch.positions,
            segment_ids=batch.segment_ids if packed else None,
            adapters=adapters,
            peft=self.peft,
            compute=self.compute,
            logit_rows=None if packed else rows,
            return_hidden=True,
            dropout_key=dropout_key,
        )
        head, per_token = functools.partial(unembed, params, cfg=self.cfg), self.loss_norm == "per_token"
        if packed:  # the answer tokens end to end, reduced per example
            row, slot, targets, example = batch.answer_tokens()
            n = batch.length.shape[0]
            return example_token_loss(hidden[row, slot], targets, example, n, head, self.compute.loss_chunk, per_token)
        hidden = self.compute.constrain(hidden)  # the answer rows' unembedding split over the devices too
        return hidden_token_loss(hidden, targets, mask, head, self.compute.loss_chunk, per_token)
