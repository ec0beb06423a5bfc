"""Deterministic, resumable, shardable training batches on grain `MapDataset`s (docs/method.md A).

Everything here is a function of `(seed, epoch, index)` and nothing else, so every process and every restart sees
the same data order without coordinating:
  * `nested_subset(n_pool, size, seed)`: one shuffle of the pool; a training set of `size` is its first `size`
    entries, so the paper's sizes 100 * 2^i are nested prefixes of each other.
  * `EpochBatches`: epoch `e` is a fresh reshuffle seeded by `(seed, e)` (grain's index shuffle: random access, no
    hidden RNG state); `batch(epoch, index)` builds any batch directly, and `BatchIterator` walks them with a state
    `{"epoch", "index"}` that goes into the checkpoint, so a resumed run continues with the exact same batches.

Batches are `data.batch.SFTBatch`es (one example per row, right-padded, prompt then answer):
    tokens      [B, T] int32  prompt ids then answer ids, then `pad_id`; T = longest row rounded up to `multiple`
    prompt_len  [B]    int32  P; the loss rows are P - 1 .. length - 2 (they predict the answer tokens)
    length      [B]    int32  P + A
    example_id  [B]    int32  index into the `examples` given to `EpochBatches`; -1 for a dummy row

Dummy rows fill the last, partial batch of an epoch so that every batch has the same number of rows (one compiled
step, shardable over a fixed mesh). A dummy row has `prompt_len == length == 1` and only `pad_id` tokens: it has no
answer tokens, so every answer mask (`length - prompt_len == 0`) is empty and it adds nothing to the summed loss,
the gradient, the token counts or token accuracy. Only a mean over *rows* still sees it (its per-example loss is 0):
average per-example quantities over `example_id >= 0` rows, e.g. `sum(per_example * real) / sum(real)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from bitune_jax.data.batch import PackedBatch, SFTBatch, round_up
from bitune_jax.data.packing import PACKINGS, pack
from bitune_jax.data.tokenize import TokenizedExample

DUMMY_ID = -1


def derive_seed(stream: str, *parts: int) -> int:
    """A 32-bit grain seed for one use (`stream`) of `(seed, epoch, ...)`; a pure function of its arguments.

    The stream name keeps uses apart: NumPy's `SeedSequence` pads entropy with zeros, so `(s,)` and `(s, 0)`
    alone would give the same seed.
    """
    if any(int(p) < 0 for p in parts):
        raise ValueError(f"seeds and epochs must be >= 0, got {parts}")
    entropy = [zlib.crc32(stream.encode()), *(int(p) for p in parts)]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def shuffled_order(n: int, seed: int) -> np.ndarray:
    """A permutation of `range(n)` by grain's index shuffle with a 32-bit `seed`."""
    ds = grain.MapDataset.range(n).shuffle(seed=seed)
    return np.fromiter((ds[i] for i in range(n)), np.int64, count=n)  # indexing: ~10 us/item, iteration is slower


def nested_subset(n_pool: int, size: int, seed: int) -> np.ndarray:
    """Indices into a pool of `n_pool` for a training set of `size`: the first `size` of one seeded shuffle.

    The same `(n_pool, seed)` gives the same shuffle for every size, so smaller training sets are prefixes of
    larger ones (docs/method.md A: sizes 100 * 2^i from one shuffled pool).
    """
    if not 1 <= size <= n_pool:
        raise ValueError(f"subset size must be in 1..{n_pool} (the pool size), got {size}")
    return shuffled_order(n_pool, derive_seed("subset", seed))[:size]


def split_pool(n_pool: int, val_size: int, size: int, seed: int, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`(validation ids, training ids)`: as the authors split (shuffle the pool once, the first `val_size` rows are
    the validation set, training sets are prefixes of the rest), so the validation set is the same for every
    training size, never overlaps it, and with `val_size=0` the training ids are `nested_subset(n_pool, size)`.
    `shuffle=False` takes the rows as they stand: a pool already in its split order (`data.pool_order="file"`,
    e.g. the authors' own split written by `experiments/prepare_dolci.py`)."""
    if not 0 <= val_size < n_pool:
        raise ValueError(f"validation size must be in 0..{n_pool - 1} (the pool has {n_pool} rows), got {val_size}")
    if not 1 <= size <= n_pool - val_size:
        raise ValueError(
            f"training size must be in 1..{n_pool - val_size} (pool {n_pool} minus {val_size} for "
            f"validation), got {size}"
        )
    order = nested_subset(n_pool, n_pool, seed) if shuffle else np.arange(n_pool)
    return order[:val_size], order[val_size : val_size + size]


def authors_epoch_order(n: int, seed: int, epoch: int, previous: np.ndarray | None = None) -> np.ndarray:
    """Example order of `epoch` as the repetition authors' `train.py` walks it: at the start of every epoch e,
    `dataset = dataset.shuffle(seed=seed + e)` on the previous epoch's order, and `datasets`' `shuffle(seed=s)` is
    `select(numpy.random.default_rng(s).permutation(len))`. So order_e = order_{e-1}[perm(seed + e)], from the
    identity. `previous` (epoch - 1's order) saves recomputing the chain."""
    if epoch < 0 or seed < 0:
        raise ValueError(f"epoch and seed must be >= 0, got {epoch}, {seed}")
    order, start = (np.arange(n), 0) if previous is None else (previous, epoch)
    for e in range(start, epoch + 1):
        order = order[np.random.default_rng(seed + e).permutation(n)]
    return order


def nested_sizes(n_pool: int, smallest: int = 100) -> list[int]:
    """The paper's subset sizes `smallest * 2^i` that fit in the pool (100, 200, 400, ...)."""
    if smallest < 1:
        raise ValueError(f"smallest must be >= 1, got {smallest}")
    sizes = []
    while smallest * 2 ** len(sizes) <= n_pool:
        sizes.append(smallest * 2 ** len(sizes))
    return sizes


def collate(examples: Sequence[TokenizedExample], ids: np.ndarray, width: int, pad_id: int) -> SFTBatch:
    """Rows `ids` of `examples` (-1: a dummy row) as one right-padded batch of width `width`."""
    rows = len(ids)
    tokens = np.full((rows, width), pad_id, np.int32)
    prompt_len, length = np.ones(rows, np.int32), np.ones(rows, np.int32)  # dummy rows: P == length == 1
    for r, i in enumerate(ids):
        if i < 0:
            continue
        e = examples[i]
        p, n = len(e.prompt_ids), e.length
        tokens[r, :p], tokens[r, p:n] = e.prompt_ids, e.answer_ids
        prompt_len[r], length[r] = p, n
    return SFTBatch(tokens, prompt_len, length, example_id=np.asarray(ids, np.int32))


class EpochBatches:
    """Random access to the batches of every epoch of a fixed training set.

    Args:
      examples: the training set (e.g. a nested subset); `example_id` indexes into it.
      batch_size: rows of the global batch (over all processes).
      seed: data seed; epoch `e` is shuffled with `(seed, e)`.
      pad_id: token id of padding (never a loss target: the answer mask stops at `length`).
      multiple: pad each batch to its longest row rounded up to this, bounding the number of compiled shapes.
      bucket_chunks: 0 for a plain shuffle; k > 0 sorts each chunk of `k * batch_size` shuffled examples by length
        before cutting it into batches, then shuffles the full batches, so rows of a batch have similar lengths.
      max_width: cap on the padded width (e.g. the model context), when `multiple` would round past it.
      order: "grain" (epoch e is a fresh shuffle by `(seed, e)`: random access) or "authors" (their chain of
        `shuffle(seed=seed + e)`, `authors_epoch_order`; epochs walked in order are computed incrementally).
      packing: "none" (one example a row: `SFTBatch`) or a `data.packing` method: the same examples packed into rows
        of `max_width` tokens (`PackedBatch`; global batches only), `row_multiple` rows and slots at a time, with
        the Bitune stream's prompt rows if `prompt_rows`.
    """

    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        batch_size: int,
        *,
        seed: int,
        pad_id: int,
        multiple: int = 16,
        bucket_chunks: int = 0,
        max_width: int | None = None,
        order: str = "grain",
        packing: str = "none",
        row_multiple: int = 1,
        prompt_rows: bool = False,
    ):
        if packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {packing!r}")
        if packing != "none" and max_width is None:
            raise ValueError("packing needs max_width: the length of a packed row")
        if order not in ("grain", "authors"):
            raise ValueError(f"order must be 'grain' or 'authors', got {order!r}")
        if order == "authors" and bucket_chunks:
            raise ValueError("order='authors' is the authors' exact example order; length bucketing would change it")
        if not examples:
            raise ValueError("EpochBatches needs at least one example")
        if batch_size < 1 or multiple < 1 or bucket_chunks < 0:
            raise ValueError(
                f"need batch_size >= 1, multiple >= 1, bucket_chunks >= 0; got {batch_size}, "
                f"{multiple}, {bucket_chunks}"
            )
        derive_seed("epoch", seed)  # validates
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        self.multiple, self.bucket_chunks, self.max_width, self.order = multiple, bucket_chunks, max_width, order
        self._chain: tuple[int, np.ndarray] | None = None  # order="authors": the last epoch's order
        self.lengths = np.asarray([e.length for e in examples], np.int64)
        if max_width is not None and self.lengths.max() > max_width:
            i = int(self.lengths.argmax())
            raise ValueError(f"{examples[i].source}: {self.lengths[i]} tokens exceed max_width={max_width}")
        self._plan: tuple[int, np.ndarray] | None = None  # the last epoch's plan (epochs are walked in order)
        self.packing, self.row_multiple, self.prompt_rows = packing, row_multiple, prompt_rows

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example order of `epoch` (before bucketing): a reshuffle seeded by `(seed, epoch)`, or the authors'."""
        if self.order == "grain":
            return shuffled_order(len(self.examples), derive_seed("epoch", self.seed, epoch))
        previous = self._chain[1] if self._chain is not None and self._chain[0] == epoch - 1 else None
        if self._chain is None or self._chain[0] != epoch:
            self._chain = (epoch, authors_epoch_order(len(self.examples), self.seed, epoch, previous))
        return self._chain[1]

    def _make_plan(self, epoch: int) -> np.ndarray:
        order, b = self.epoch_order(epoch), self.batch_size
        if self.bucket_chunks:
            chunk = self.bucket_chunks * b
            batches = []
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches += [part[j : j + b] for j in range(0, len(part), b)]
            full = [x for x in batches if len(x) == b]  # only the very last batch can be partial
            perm = shuffled_order(len(full), derive_seed("buckets", self.seed, epoch)) if full else []
            batches = [full[j] for j in perm] + [x for x in batches if len(x) < b]
            order = np.concatenate(batches)
        plan = np.full(self.batches_per_epoch * b, DUMMY_ID, np.int64)
        plan[: len(order)] = order
        plan.setflags(write=False)  # cached and shared by every `batch` call of this epoch
        return plan.reshape(self.batches_per_epoch, b)

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """`[batches_per_epoch, batch_size]` example ids of `epoch`; -1 marks the dummy rows of the last batch."""
        if self._plan is None or self._plan[0] != epoch:
            self._plan = (epoch, self._make_plan(epoch))
        return self._plan[1]

    def batch(self, epoch: int, index: int, process_index: int = 0, process_count: int = 1) -> SFTBatch | PackedBatch:
        """Batch `index` of `epoch`; with several processes, this process's contiguous slice of its rows.

        The padded width comes from the global batch, so the slices of all processes have the same shape and
        concatenate (in process order) to the global batch.
        """
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f"batch index {index} out of range: an epoch has {self.batches_per_epoch} batches")
        if epoch < 0:
            raise IndexError(f"epoch must be >= 0, got {epoch}")
        if process_count < 1 or self.batch_size % process_count:
            raise ValueError(
                f"the global batch size {self.batch_size} must divide evenly over {process_count} processes"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} out of range for {process_count} processes")
        ids = self.epoch_plan(epoch)[index]
        if self.packing != "none":
            if process_count != 1:
                raise ValueError("packed batches are global: every process packs the whole batch (process_count 1)")
            return pack(
                self.examples,
                ids,
                self.max_width,
                self.pad_id,
                self.packing,
                multiple=self.multiple,
                row_multiple=self.row_multiple,
                prompt_rows=self.prompt_rows,
            )
        longest = int(self.lengths[ids[ids >= 0]].max())
        width = round_up(longest, self.multiple)
        if self.max_width is not None:
            width = min(width, self.max_width)
        rows = self.batch_size // process_count
        local = ids[process_index * rows : (process_index + 1) * rows]
        return collate(self.examples, local, width, self.pad_id)

    def dataset(self, epoch: int, process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
        """The batches of one epoch as a grain `MapDataset` (element `i` is `batch(epoch, i)`)."""
        return grain.MapDataset.range(self.batches_per_epoch).map(
            lambda i: self.batch(epoch, i, process_index, process_count)
        )

    def iterator(
        self, *, num_epochs: int | None = None, process_index: int = 0, process_count: int = 1
    ) -> BatchIterator:
        return BatchIterator(self, num_epochs=num_epochs, process_index=process_index, process_count=process_count)


class BatchIterator(grain.DatasetIterator):
    """Walks `EpochBatches` epoch by epoch; its state is the position of the next batch.

    `get_state()` -> `{"epoch": e, "index": i}` (JSON, so grain's orbax handler `grain.checkpoint.CheckpointSave`
    saves it with the model); `set_state` on a fresh iterator resumes with exactly that batch. Read the state
    before `next()` to know the `(epoch, index)` of the batch it returns (per-epoch metrics). Stops after
    `num_epochs` epochs, or never when it is None (the trainer's saturation check decides).
    """

    def __init__(
        self, batches: EpochBatches, *, num_epochs: int | None = None, process_index: int = 0, process_count: int = 1
    ):
        super().__init__()
        self.batches, self.num_epochs = batches, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.epoch, self.index = 0, 0

    def __next__(self) -> SFTBatch:
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        out = self.batches.batch(self.epoch, self.index, self.process_index, self.process_count)
        self.index += 1
        if self.index == self.batches.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return out

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"epoch", "index"}:
            raise ValueError(f"data iterator state must be {{'epoch': int, 'index': int}}, got {state!r}")
        epoch, index = state["epoch"], state["index"]
        if not all(isinstance(v, (int, np.integer)) for v in (epoch, index)):
            raise ValueError(f"data iterator state values must be integers, got {state!r}")
        if epoch < 0 or not 0 <= index < self.batches.batches_per_epoch:
            raise ValueError(
                f"data iterator state {state!r} is out of range: epochs start at 0 and an epoch has "
                f"{self.batches.batches_per_epoch} batches (was the data or batch size changed?)"
            )
        self.epoch, self.index = int(epoch), int(index)
