"""The host side: `Engine`, which admits requests into free slots, decodes every slot in chunks and hands back each
request's samples as its last one ends."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from bitune_jax.engine.decoders import Decoder, Weights
from bitune_jax.engine.requests import Completion, Request, check_requests
from bitune_jax.engine.slots import Slots, decode, insert, prefill, release, slot_shardings, step_weights
from bitune_jax.models.transformer import KVCache

WINDOW_MULTIPLE = 128  # the cache slots a decode step attends over, rounded up to this (one compile each)


def prompt_width(length: int, budget: int, max_len: int, multiple: int, min_width: int = 1) -> int:
    """The prefill width of a prompt: rounded up to `multiple` (bounded compiles), never past what the slot
    holds with the budget."""
    return max(length, min_width, min(-(-length // multiple) * multiple, max_len - budget))


@dataclasses.dataclass
class _Sample:
    request: int
    sample: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    stopped: bool = False  # at a stop string


class Engine:
    """Continuous batching over `slots` decode rows. `generate(requests)` yields each `Completion` as its last
    sample finishes; `run(requests)` returns them in request order. On a `mesh`, the slots' rows go over `data`
    and their key/value heads over `tensor`; the weights keep the shardings they were loaded with
    (`bitune_jax.load(..., mesh=)`), and jit partitions the three programs from the two. The decode step reads a
    per-layer copy of the weights (`decoder.step_weights`), made at the first `generate` and kept: the engine holds
    the weights twice."""

    def __init__(
        self,
        decoder: Decoder,
        weights: Weights,
        *,
        slots: int = 8,
        max_len: int | None = None,  # cache tokens a slot (prompt + new); None: what the requests need
        eos_ids: tuple[int, ...] = (),
        tokenizer=None,
        steps_per_sync: int = 8,  # decode steps between host checks (finished slots wait at most this many)
        prompt_multiple: int = 64,
        mesh: jax.sharding.Mesh | None = None,  # slots laid out by `slot_shardings`; weights placed by the caller
    ):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if steps_per_sync < 1:
            raise ValueError(f"steps_per_sync must be >= 1, got {steps_per_sync}")
        self.decoder, self.weights, self.num_slots = decoder, weights, slots
        self.max_len, self.eos_ids, self.tokenizer = max_len, tuple(eos_ids), tokenizer
        self.steps_per_sync, self.prompt_multiple, self.mesh = steps_per_sync, prompt_multiple, mesh
        self._step_weights: Weights | None = None

    def run(self, requests: Sequence[Request], progress: bool = False) -> list[Completion]:
        done = {c.index: c for c in self.generate(requests, progress=progress)}
        return [done[i] for i in range(len(requests))]

    def generate(self, requests: Sequence[Request], progress: bool = False) -> Iterator[Completion]:
        d = self.decoder
        cfg = d.cfg
        if self.max_len is not None and self.max_len > cfg.max_seq_len:
            raise ValueError(f"max_len={self.max_len} exceeds the model context {cfg.max_seq_len}")
        room = f"the model context {cfg.max_seq_len}" if self.max_len is None else f"max_len={self.max_len}"
        max_len = self.max_len or cfg.max_seq_len
        check_requests(requests, cfg.vocab_size, max_len, self.tokenizer is not None, d.min_width, room)
        if not requests:
            return
        if self.max_len is None:  # what the longest request needs
            max_len = min(
                max_len,
                max(
                    prompt_width(len(r.prompt), r.max_new_tokens, max_len, self.prompt_multiple, d.min_width)
                    + r.max_new_tokens
                    for r in requests
                ),
            )
        eos_sets = [self.eos_ids if r.eos_ids is None else tuple(r.eos_ids) for r in requests]
        eos_width = max(1, *(len(e) for e in eos_sets))
        if self._step_weights is None:
            self._step_weights = step_weights(self.decoder, self.weights)
        slots = Slots.init(cfg, self.num_slots, max_len, self.decoder.compute.dtype, eos_width)
        if self.mesh is not None:
            slots = jax.device_put(slots, slot_shardings(slots, self.mesh))
        owner: list[_Sample | None] = [None] * self.num_slots
        queue = collections.deque(range(len(requests)))
        next_sample = [0] * len(requests)
        prompt_cache: dict[int, tuple[jax.Array, KVCache]] = {}
        results: dict[int, list[_Sample | None]] = {i: [None] * r.n for i, r in enumerate(requests)}
        bar = _progress(len(requests), progress)

        while queue or any(o is not None for o in owner):
            for s in range(self.num_slots):  # admit: a free slot takes the next sample in line
                if owner[s] is not None or not queue:
                    continue
                i = queue[0]
                r = requests[i]
                if i not in prompt_cache:
                    prompt_cache[i] = self._prefill(r, max_len)
                logits, cache = prompt_cache[i]
                j = next_sample[i]
                key = jax.random.key_data(jax.random.fold_in(jax.random.key(r.seed), j))
                eos = np.full((eos_width,), -1, np.int32)
                eos[: len(eos_sets[i])] = eos_sets[i]
                settings = (
                    np.float32(r.temperature),
                    np.float32(r.top_p),
                    np.int32(r.top_k),
                    np.int32(r.max_new_tokens),
                )
                slots = insert(slots, cache, logits, np.int32(s), key, settings, eos)
                owner[s] = _Sample(i, j)
                next_sample[i] += 1
                if next_sample[i] == r.n:
                    queue.popleft()
                    del prompt_cache[i]
            live = [o is not None for o in owner]
            sampled = any(requests[o.request].temperature > 0 for o in owner if o is not None)
            # Attention reads only the cache slots in use: the longest live slot's, rounded up (bounded compiles).
            used = int(np.max(np.where(live, np.asarray(slots.cache.length), 0))) + self.steps_per_sync
            window = min(max_len, -(-used // WINDOW_MULTIPLE) * WINDOW_MULTIPLE)
            slots, out = decode(
                self.decoder, self._step_weights, slots, steps=self.steps_per_sync, window=window, sampled=sampled
            )
            out, active = np.asarray(out), np.asarray(slots.active)
            for s, sample in enumerate(owner):
                if sample is None:
                    continue
                sample.tokens += [int(t) for t in out[s] if t >= 0]
                stop = requests[sample.request].stop
                if active[s] and stop and self._meets_stop(sample.tokens, stop):
                    sample.stopped = True
                    slots = release(slots, np.int32(s))
                elif active[s]:
                    continue
                owner[s] = None
                results[sample.request][sample.sample] = sample
                if all(x is not None for x in results[sample.request]):
                    bar.update(1)
                    yield self._completion(sample.request, requests[sample.request], results.pop(sample.request))
        bar.close()

    def _prefill(self, r: Request, max_len: int) -> tuple[jax.Array, KVCache]:
        length = len(r.prompt)
        width = prompt_width(length, r.max_new_tokens, max_len, self.prompt_multiple, self.decoder.min_width)
        tokens = np.zeros((1, width), np.int32)
        positions = np.full((1, width), -1, np.int32)
        tokens[0, width - length :] = r.prompt
        positions[0, width - length :] = np.arange(length)
        return prefill(self.decoder, self.weights, tokens, positions)

    def _meets_stop(self, tokens: list[int], stop: tuple[str, ...]) -> bool:
        text = self.tokenizer.decode(tokens)
        return any(s in text for s in stop)

    def _completion(self, index: int, r: Request, samples: list[_Sample]) -> Completion:
        eos = set(self.eos_ids if r.eos_ids is None else r.eos_ids)
        tokens, finished, texts = [], [], [] if self.tokenizer is not None else None
        for sample in samples:
            ids = sample.tokens
            if r.stop:  # the shortest prefix whose text holds a stop string; the text ends before it
                for n in range(1, len(ids) + 1):
                    text = self.tokenizer.decode(ids[:n])
                    cut = min((text.index(s) for s in r.stop if s in text), default=None)
                    if cut is not None:
                        ids, sample.stopped = ids[:n], True
                        texts.append(text[:cut])
                        break
                else:
                    texts.append(self.tokenizer.decode(ids))
            elif texts is not None:
                texts.append(self.tokenizer.decode(ids))
            tokens.append(ids)
            finished.append(sample.stopped or bool(ids and ids[-1] in eos))
        return Completion(index, tokens, finished, texts)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="request", disable=not enabled, leave=False)
