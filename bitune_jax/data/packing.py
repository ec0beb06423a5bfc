"""Packing: the examples of one batch placed end to end in as few rows as fit, so a step multiplies tokens rather
than padding (`data.packing`).

Packing re-lays out a batch and changes nothing else: the batch holds the same examples, in the same slots, as the
unpacked one (`EpochBatches` decides which examples make a batch, packed or not), so per-epoch reshuffles, nested
subsets and a resumed run's position (`{"epoch", "index"}`) are untouched, and the packer needs no state of its own.
Each example keeps positions 0..length-1 (RoPE) and a segment id of its own; attention, targets and the Bitune
streams never cross a segment (`PackedBatch`). The answer tokens are listed end to end too (row, slot, example), so
the loss unembeds exactly the answer tokens, not every example padded to the longest answer.

Placement is by length, per batch:
  * `first_fit`: each example, in slot order, goes into the first row with room for it;
  * `best_fit`: examples longest first, each into the row it leaves least room in (best-fit decreasing, as TRL).
The row count is rounded up to a small static set (1 to 8, then four sizes an octave: 10, 12, 14, 16, 20, ...) and
to a multiple of the mesh's data x fsdp, and the width to the longest row rounded up to `multiple`, so the number of
compiled step shapes stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bitune_jax.data.batch import PackedBatch, round_up
from bitune_jax.data.tokenize import TokenizedExample

PACKINGS = ("none", "first_fit", "best_fit")


def place(lengths: Sequence[int], capacity: int, method: str) -> list[list[int]]:
    """Rows of indices into `lengths`, each row's total at most `capacity`; every index placed once, each row in
    index order."""
    if method not in PACKINGS[1:]:
        raise ValueError(f"packing method must be one of {PACKINGS[1:]}, got {method!r}")
    order = range(len(lengths))
    if method == "best_fit":
        order = sorted(order, key=lambda i: -lengths[i])  # stable: ties keep slot order
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        need = int(lengths[i])
        if need > capacity:
            raise ValueError(f"example {i} has {need} tokens: longer than a packed row ({capacity})")
        fits = [r for r, room in enumerate(free) if room >= need]
        if not fits:
            rows.append([i])
            free.append(capacity - need)
            continue
        r = fits[0] if method == "first_fit" else min(fits, key=lambda r: free[r])
        rows[r].append(i)
        free[r] -= need
    return [sorted(r) for r in rows]


def row_bucket(rows: int, multiple: int = 1) -> int:
    """The static row count for `rows` packed rows: itself up to 8, then the next of 10, 12, 14, 16, 20, 24, 28, 32,
    40, ... (four sizes an octave: at most a quarter of the rows are filler), then a multiple of `multiple` (the
    mesh's data x fsdp)."""
    size = rows
    if rows > 8:
        step = 1 << max((rows - 1).bit_length() - 3, 0)  # a quarter of the octave (2^k, 2^(k+1)] that holds `rows`
        size = -(-rows // step) * step
    return -(-size // multiple) * multiple


def pack(
    examples: Sequence[TokenizedExample],
    ids: np.ndarray,  # [slots] example ids, -1 for a filler slot
    capacity: int,
    pad_id: int,
    method: str = "first_fit",
    *,
    multiple: int = 16,
    row_multiple: int = 1,
    prompt_rows: bool = False,
) -> PackedBatch:
    """Examples `ids` (slot order kept) packed into rows of at most `capacity` tokens. `row_multiple` rounds both
    the row count and the slot count (filler slots: no targets) so that both split over the mesh's data x fsdp.
    `prompt_rows` (Bitune) adds the bidirectional stream's own packed rows and each causal row's mixed block."""
    ids = np.asarray(ids, np.int64)
    slots = -(-len(ids) // row_multiple) * row_multiple
    ids = np.concatenate([ids, np.full(slots - len(ids), -1, np.int64)])
    real = np.flatnonzero(ids >= 0)
    lengths = [examples[ids[k]].length for k in real]
    placed = [[int(real[i]) for i in row] for row in place(lengths, capacity, method)]
    fill = max(sum(examples[ids[k]].length for k in row) for row in placed)
    width = min(round_up(fill, multiple), max(capacity, fill))
    rows = row_bucket(len(placed), row_multiple)

    tokens = np.full((rows, width), pad_id, np.int32)
    positions = np.full((rows, width), -1, np.int32)
    segment_ids = np.zeros((rows, width), np.int32)
    prompt_len, length = np.ones(slots, np.int32), np.ones(slots, np.int32)  # filler slots: P == length == 1
    row_of, start = np.zeros(slots, np.int32), np.zeros(slots, np.int32)
    for r, members in enumerate(placed):
        at = 0
        for k in members:
            e = examples[ids[k]]
            p, n = len(e.prompt_ids), e.length
            tokens[r, at : at + p], tokens[r, at + p : at + n] = e.prompt_ids, e.answer_ids
            positions[r, at : at + n] = np.arange(n)
            segment_ids[r, at : at + n] = k + 1
            prompt_len[k], length[k], row_of[k], start[k] = p, n, r, at
            at += n
    answers = [(row_of[k], start[k] + prompt_len[k] - 1 + j, k) for k in real for j in range(length[k] - prompt_len[k])]
    count = -(-len(answers) // (multiple * row_multiple)) * multiple * row_multiple  # splits over the mesh, bounded
    answer = np.zeros((3, count), np.int32)
    answer[2] = -1
    answer[:, : len(answers)] = np.asarray(answers, np.int32).T
    prompt_slots = bidir_source = bidir_index = None
    if prompt_rows:
        prompt_slots, bidir_source, bidir_index = _bidirectional_rows(
            prompt_len, real, row_of, start, placed, rows, width, capacity, multiple, row_multiple
        )
    return PackedBatch(
        tokens=tokens,
        positions=positions,
        segment_ids=segment_ids,
        prompt_len=prompt_len,
        length=length,
        example_id=ids.astype(np.int32),
        row=row_of,
        start=start,
        answer_row=answer[0],
        answer_slot=answer[1],
        answer_example=answer[2],
        prompt_slots=prompt_slots,
        bidir_source=bidir_source,
        bidir_index=bidir_index,
    )


def _bidirectional_rows(prompt_len, real, row_of, start, placed, rows, width, capacity, multiple, row_multiple):
    """Bitune's layout: the bidirectional stream's own rows (every example's first `P - 1` tokens, first fit, as flat
    indices into the causal rows), and for each of the `rows` causal rows its mixed block (the slots of its
    examples' `P - 1` tokens) with where each of them sits in the stream. The stream then costs no answer token and
    little padding. Returns `(prompt_slots, bidir_source, bidir_index)`."""
    mixed = [k for k in real if prompt_len[k] > 1]
    stream = [[mixed[i] for i in row] for row in place([int(prompt_len[k]) - 1 for k in mixed], capacity, "first_fit")]
    stream = stream or [[]]
    fill = max(sum(int(prompt_len[k]) - 1 for k in row) for row in stream)
    stream_width = round_up(fill, multiple)
    source = np.full((row_bucket(len(stream), row_multiple), stream_width), -1, np.int32)
    located = {}  # example slot -> flat index of its first token in the stream
    for r, members in enumerate(stream):
        at = 0
        for k in members:
            n = int(prompt_len[k]) - 1
            source[r, at : at + n] = row_of[k] * width + start[k] + np.arange(n)
            located[k] = r * stream_width + at
            at += n
    blocks = [[k for k in members if k in located] for members in placed]
    longest = max(sum(int(prompt_len[k]) - 1 for k in b) for b in blocks)
    slots = np.full((rows, round_up(longest, multiple)), -1, np.int32)
    index = np.full_like(slots, -1)
    for r, members in enumerate(blocks):
        j = 0
        for k in members:
            n = int(prompt_len[k]) - 1
            slots[r, j : j + n] = start[k] + np.arange(n)
            index[r, j : j + n] = located[k] + np.arange(n)
            j += n
    return slots, source, index


def padding_fraction(batch) -> float:
    """Share of a batch's token slots that hold padding (packed or not): the compute packing saves."""
    return 1.0 - float(np.sum(np.asarray(batch.length)[np.asarray(batch.example_id) >= 0])) / np.size(batch.tokens)
