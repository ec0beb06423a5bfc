"""Validation loss and token accuracy on rows held out of the training pool (`data.val_size`, docs/method.md A).

The same forward and loss as training (no dropout, no update), over every validation row in fixed batches, on
the training mesh. Aggregated as the training epoch is: loss is the mean over rows of each row's token-mean loss,
token accuracy is over all answer tokens, and `val_sample_token_accuracy` is the mean of each row's own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bitune_jax.data import EpochBatches, SFTBatch, TokenizedExample
from bitune_jax.train.objectives import Objective
from bitune_jax.train.sharding import batch_shardings, global_batch, row_multiple


class Validation:
    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        objective: Objective,
        *,
        batch_size: int,
        pad_id: int,
        multiple: int,
        max_width: int,
        mesh: jax.sharding.Mesh,
        trainable_shardings,
        frozen_shardings,
    ):
        self.batches = EpochBatches(examples, batch_size, seed=0, pad_id=pad_id, multiple=multiple, max_width=max_width)
        self.objective, self.mesh, self.multiple, self.pad_id = objective, mesh, multiple, pad_id
        self.shardings = (trainable_shardings, frozen_shardings)
        self._steps: dict[tuple[int, int], Any] = {}

    def _step(self, full: SFTBatch, widths: tuple[int, int]):
        if widths not in self._steps:
            loss = functools.partial(self.objective.loss, prompt_width=widths[0], answer_width=widths[1])
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            self._steps[widths] = jax.jit(
                lambda tr, fr, b: loss(tr, fr, b)[1],
                in_shardings=(*self.shardings, batch_shardings(full, self.mesh)),
                out_shardings=replicated,
            )
        return self._steps[widths]

    def run(self, trainable, frozen) -> dict[str, float]:
        correct = tokens = rows = 0
        loss_sum = accuracy_sum = 0.0
        for index in range(self.batches.batches_per_epoch):
            full = self.batches.batch(0, index).pad_rows(row_multiple(self.mesh), self.pad_id)
            widths = full.widths(self.multiple)
            m = jax.device_get(self._step(full, widths)(trainable, frozen, global_batch(full, self.mesh)))
            real = np.asarray(full.example_id) >= 0
            correct, tokens, rows = correct + int(m["correct"]), tokens + int(m["tokens"]), rows + int(real.sum())
            loss_sum += float(np.asarray(m["per_example_loss"])[real].sum())
            accuracy_sum += float(np.asarray(m["per_example_accuracy"])[real].sum())
        return {
            "val_loss": loss_sum / max(rows, 1),
            "val_token_accuracy": correct / max(tokens, 1),
            "val_sample_token_accuracy": accuracy_sum / max(rows, 1),
        }
