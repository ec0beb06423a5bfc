"""The batch layouts: prompt + answer rows to score or train on (`SFTBatch`, one example per row; `PackedBatch`,
several examples per row), and prompts to continue (`PromptBatch`).

`SFTBatch` is what the training pipeline yields and what every objective, Bitune and the scoring evals consume: one
example per row, right-padded, prompt then answer. `PackedBatch` holds the same examples placed end to end in fewer
rows (`data.packing`); every objective reads it too, with the same per-example arrays, so losses and statistics
come out the same. Positions follow from the lengths (`-1` marks padding, the mask
convention of the model's `forward`), and the rows that predict answer tokens follow from the prompt lengths, so
no consumer redoes either. `PromptBatch` is for decoding: prompts only, usually left-padded so that every row's next
token lands in the same cache slot; its positions are stored because they do not follow from a length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def round_up(n: int, multiple: int) -> int:
    """`n` rounded up to a multiple of `multiple`, at least one `multiple`: a padded width from a small set."""
    return max(multiple, -(-n // multiple) * multiple)


class SFTBatch(NamedTuple):
    """Rows of prompt then answer tokens; a pytree of host or device arrays (`jax.tree.map` moves it whole)."""

    tokens: jax.Array  # [batch, seq] int32: prompt then answer, then pad_id
    prompt_len: jax.Array  # [batch] int32 P; 0 or 1 for a row without targets
    length: jax.Array  # [batch] int32 P + A; the answer mask is `P <= t < length`
    example_id: jax.Array | None = None  # [batch] int32 index into the training set, -1 for a filler row

    @property
    def positions(self) -> jax.Array:
        """`[batch, seq]` int32: 0..length-1, then -1 for the right padding."""
        seq = jnp.arange(self.tokens.shape[1], dtype=jnp.int32)
        return jnp.where(seq < self.length[:, None], seq, -1)

    def answer_rows(self, answer_width: int | None = None):
        """Rows whose logits predict answer tokens: `(rows [batch, width], targets, mask)`.

        Row `P - 1 + j` predicts answer token `j`; `width` defaults to the whole sequence.
        """
        seq = self.tokens.shape[1]
        width = answer_width or seq
        j = jnp.arange(width)
        rows = jnp.clip(self.prompt_len[:, None] - 1 + j, 0, seq - 1)
        targets = jnp.take_along_axis(self.tokens, jnp.clip(rows + 1, 0, seq - 1), axis=1)
        mask = j < (self.length - self.prompt_len)[:, None]
        return rows, targets, mask

    def widths(self, multiple: int = 8) -> tuple[int, int]:
        """Static `(prompt_width, answer_width)` covering the batch (on the host), rounded up to `multiple` to bound
        recompiles: the Bitune stream's width (`P - 1` tokens) and the answer rows' width."""
        prompt_len, length = np.asarray(self.prompt_len), np.asarray(self.length)
        seq = self.tokens.shape[1]
        prompt, answer = int(prompt_len.max()) - 1, int((length - prompt_len).max())
        return min(round_up(prompt, multiple), seq), min(round_up(answer, multiple), seq)

    def pad_rows(self, multiple: int, pad_id: int = 0) -> SFTBatch:
        """Filler rows (length 0, prompt 0, example_id -1: no targets, ignored by the loss and the epoch statistics)
        appended until the row count is a multiple of `multiple` (a mesh's data x fsdp)."""
        extra = -len(self.length) % multiple
        if not extra:
            return self
        fill = (pad_id, 0, 0, -1)  # tokens, prompt_len, length, example_id
        return SFTBatch(
            *(
                None if v is None else np.concatenate([v, np.full((extra, *np.shape(v)[1:]), f, np.asarray(v).dtype)])
                for v, f in zip(self, fill)
            )
        )

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, max_len: int, seq_len: int | None = None
    ) -> SFTBatch:
        """Pack `(prompt_ids, answer_ids)` pairs into one right-padded batch, checking each pair."""
        rows = []
        for i, (prompt, answer) in enumerate(pairs):
            if len(prompt) == 0:
                raise ValueError(f"example {i}: empty prompt (Bitune needs at least one prompt token)")
            if len(answer) == 0:
                raise ValueError(f"example {i}: empty answer (there is nothing to train on)")
            if len(prompt) + len(answer) > max_len:
                raise ValueError(
                    f"example {i}: prompt ({len(prompt)}) + answer ({len(answer)}) tokens exceed the context of "
                    f"{max_len}"
                )
            rows.append(list(prompt) + list(answer))
        width = seq_len or max(len(r) for r in rows)
        if max(len(r) for r in rows) > width:
            raise ValueError(f"seq_len={width} is shorter than the longest example ({max(len(r) for r in rows)})")
        tokens = np.full((len(rows), width), pad_id, np.int32)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = r
        return cls(
            tokens=tokens,
            prompt_len=np.asarray([len(p) for p, _ in pairs], np.int32),
            length=np.asarray([len(r) for r in rows], np.int32),
        )


class PackedBatch(NamedTuple):
    """Examples placed end to end in rows (`data.packing.pack`): per token a position restarting at 0 in each
    example and a segment id; per example slot `k` (the same slots, in the same order, as the unpacked batch) its row,
    its first slot and its lengths; per answer token where it lies. Attention never crosses a segment, and the loss
    reduces answer tokens per example, so it and its per-example statistics read exactly as for an `SFTBatch`."""

    tokens: jax.Array  # [rows, seq] int32: examples end to end, then pad_id
    positions: jax.Array  # [rows, seq] int32: 0..length-1 within each example, -1 for padding
    segment_ids: jax.Array  # [rows, seq] int32: k + 1 for the tokens of example slot k, 0 for padding
    prompt_len: jax.Array  # [examples] int32 P (0 or 1 for a slot without targets)
    length: jax.Array  # [examples] int32 P + A
    example_id: jax.Array  # [examples] int32 index into the training set, -1 for a filler slot
    row: jax.Array  # [examples] int32: the row slot k lies in
    start: jax.Array  # [examples] int32: its first token's slot in that row
    answer_row: jax.Array | None = None  # [answer tokens] int32: every answer token's row, example after example
    answer_slot: jax.Array | None = None  # [answer tokens] int32: the slot whose hidden state predicts it
    answer_example: jax.Array | None = None  # [answer tokens] int32: its example slot k; -1 pads the count
    # Bitune (`pack(prompt_rows=True)`): the bidirectional stream's own packed rows and each causal row's mixed block
    prompt_slots: jax.Array | None = None  # [rows, prompt_width] int32: slots of each row's examples' P - 1 prompt
    # tokens, example after example, then -1 (the row's mixed block)
    bidir_source: jax.Array | None = None  # [bidir rows, bidir width] int32: every example's P - 1 prompt tokens
    # end to end, as flat indices `row * seq + slot` into `tokens`; -1 for padding
    bidir_index: jax.Array | None = None  # [rows, prompt_width] int32: where each mixed-block token sits in the
    # bidirectional stream, as a flat index `bidir_row * bidir_width + slot`; -1 with `prompt_slots`

    def answer_tokens(self):
        """`(row, slot, target, example)` per answer token `[answer tokens]`: the hidden state at `(row, slot)`
        predicts `target`; only answer tokens are unembedded, with no padding to the longest answer."""
        seq = self.tokens.shape[1]
        targets = self.tokens[self.answer_row, jnp.clip(self.answer_slot + 1, 0, seq - 1)]
        return self.answer_row, self.answer_slot, targets, self.answer_example

    def widths(self, multiple: int = 8) -> tuple[int, int]:
        """Static `(prompt_width, answer tokens)`: the bidirectional stream's packed width (Bitune; the row width
        without `prompt_slots`) and the length of the answer-token arrays (already rounded by the packer)."""
        del multiple
        prompt = self.tokens.shape[1] if self.prompt_slots is None else np.shape(self.prompt_slots)[1]
        return prompt, int(np.shape(self.answer_row)[0])

    def pad_rows(self, multiple: int, pad_id: int = 0) -> PackedBatch:
        """Itself: the packer already rounds rows and slots to the mesh (`pack(row_multiple=...)`)."""
        del pad_id
        if len(self.length) % multiple or len(self.tokens) % multiple:
            raise ValueError(
                f"a packed batch of {len(self.tokens)} rows and {len(self.length)} example slots does not split "
                f"over {multiple} data x fsdp devices: pack with row_multiple={multiple}"
            )
        return self


class PromptBatch(NamedTuple):
    """Prompts to continue, padded on either side."""

    tokens: np.ndarray  # [batch, seq] int32, padding filled with pad_id
    positions: np.ndarray  # [batch, seq] int32, -1 marks padding

    @classmethod
    def pad(
        cls, sequences: Sequence[Sequence[int]], pad_id: int = 0, side: Literal["left", "right"] = "left"
    ) -> PromptBatch:
        """Pad token lists into one batch; positions count each sequence's own tokens from 0."""
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence in the batch needs at least one token")
        width = max(len(s) for s in sequences)
        tokens = np.full((len(sequences), width), pad_id, np.int32)
        positions = np.full((len(sequences), width), -1, np.int32)
        for i, s in enumerate(sequences):
            start = width - len(s) if side == "left" else 0
            tokens[i, start : start + len(s)] = s
            positions[i, start : start + len(s)] = np.arange(len(s))
        return cls(tokens, positions)
