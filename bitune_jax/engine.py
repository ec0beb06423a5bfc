"""Continuous batching: a fixed set of decode slots over one KV cache. A request enters as soon as a slot frees, the n
samples of a prompt share one prefill, and every slot stops at its own EOS or budget, so no row decodes past its end
while others still run (`generation.decode_loop`, the static batch, is kept as the reference the tests compare to).

The device side is three jitted pure functions (prefill a prompt, insert it into a slot, decode a chunk of steps for
all slots); `Engine.generate` is the host-side scheduler around them. Token `j` of a sample is drawn with
`fold_in(fold_in(key(seed), sample), j)`, so a request's samples do not depend on the slot count or on what else
runs beside them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.bitune.config import BituneConfig
from bitune_jax.bitune.forward import adapter_set
from bitune_jax.bitune.generation import prefill as bitune_prefill
from bitune_jax.models.compute import Compute
from bitune_jax.models.config import ModelConfig
from bitune_jax.models.transformer import KVCache, forward
from bitune_jax.peft import PeftConfig
from bitune_jax.sampling import SamplingConfig, sample_rows

Weights = Any  # the pytree a decoder reads: (params, adapters) or (base, trainable)
WINDOW_MULTIPLE = 128  # the cache slots a decode step attends over, rounded up to this (one compile each)


# ------------------------------------------------------------------------------------------------ model kinds
@dataclasses.dataclass(frozen=True)
class PlainDecoder:
    """A plain model, or one with unmerged PEFT adapters. Weights: `(params, adapters or None)`."""

    cfg: ModelConfig
    peft: PeftConfig | None = None
    compute: Compute = Compute()
    min_width = 1  # prefill columns a prompt needs

    def prefill(self, weights: Weights, tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, KVCache]:
        """Left-padded prompts `[batch, width]` -> next-token logits `[batch, vocab]` and their cache of `width`."""
        params, adapters = weights
        batch, width = tokens.shape
        cache = KVCache.init(self.cfg, batch, width, self.compute.dtype)
        logits, cache = forward(
            params,
            tokens,
            self.cfg,
            positions=positions,
            cache=cache,
            adapters=adapters,
            peft=self.peft,
            compute=self.compute,
            logit_rows=jnp.full((batch, 1), width - 1, jnp.int32),
        )
        return logits[:, 0], cache

    def step(self, weights: Weights, token, pos, cache: KVCache, window: int) -> tuple[jax.Array, KVCache]:
        """One token a row `[batch]` at `pos`, attending over the cache's first `window` slots."""
        params, adapters = weights
        logits, cache = forward(
            params,
            token[:, None],
            self.cfg,
            positions=pos[:, None],
            cache=cache,
            adapters=adapters,
            peft=self.peft,
            compute=self.compute,
            kv_window=window,
        )
        return logits[:, 0], cache


@dataclasses.dataclass(frozen=True)
class BituneDecoder:
    """Bitune (docs/method.md B, step 5): the mixed prompt cache, built once per prompt from both adapter sets,
    then causal decoding with the `causal` set. Weights: `(base, trainable)`."""

    cfg: ModelConfig
    bcfg: BituneConfig
    compute: Compute = Compute()
    min_width = 2  # the prompt minus its last token is the bidirectional head: one column at least, padding or not

    def prefill(self, weights: Weights, tokens: jax.Array, positions: jax.Array) -> tuple[jax.Array, KVCache]:
        base, trainable = weights
        width = tokens.shape[1]
        return bitune_prefill(
            base,
            trainable,
            tokens[:, :-1],
            positions[:, :-1],
            tokens[:, -1],
            positions[:, -1],
            self.cfg,
            self.bcfg,
            cache_len=width,
            compute=self.compute,
        )

    def step(self, weights: Weights, token, pos, cache: KVCache, window: int) -> tuple[jax.Array, KVCache]:
        """The plain step with the `causal` adapter set: answers are decoded causally."""
        base, trainable = weights
        causal = PlainDecoder(self.cfg, self.bcfg.peft, self.compute)
        return causal.step((base, adapter_set(trainable, "causal")), token, pos, cache, window)


Decoder = PlainDecoder | BituneDecoder


# ---------------------------------------------------------------------------------------------------- requests
@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt (token ids) and how to continue it; `n` samples share its prefill."""

    prompt: Sequence[int]
    max_new_tokens: int = 64
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no cut
    seed: int = 0
    eos_ids: tuple[int, ...] | None = None  # None: the engine's
    stop: tuple[str, ...] = ()  # stop strings (the engine needs a tokenizer): the text is cut before them


@dataclasses.dataclass
class Completion:
    """A finished request: its n samples, each up to and including EOS (or cut at a stop string, or at the budget)."""

    index: int  # the request's place in the list given to `generate`
    tokens: list[list[int]]
    finished: list[bool]  # stopped at EOS or a stop string, not at the budget
    texts: list[str] | None = None  # with a tokenizer: the decoded samples, cut before a stop string


def check_requests(
    requests: Sequence[Request],
    vocab_size: int,
    max_len: int,
    can_stop: bool,
    min_width: int = 1,
    room: str = "the cache of a slot",
) -> None:
    """Every request checked before anything compiles; the error names the request."""
    for i, r in enumerate(requests):
        where = f"request {i}"
        if len(r.prompt) == 0:
            raise ValueError(f"{where}: the prompt is empty")
        bad = [t for t in r.prompt if not 0 <= int(t) < vocab_size]
        if bad:
            raise ValueError(f"{where}: token id {bad[0]} is outside the vocabulary of {vocab_size}")
        if r.max_new_tokens <= 0:
            raise ValueError(f"{where}: max_new_tokens must be >= 1, got {r.max_new_tokens}")
        if r.n < 1:
            raise ValueError(f"{where}: n (samples) must be >= 1, got {r.n}")
        try:
            SamplingConfig(r.temperature, r.top_p, r.top_k)  # the sampling settings' own checks
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if r.stop and not can_stop:
            raise ValueError(f"{where}: stop strings need an engine with a tokenizer")
        if max(len(r.prompt), min_width) + r.max_new_tokens > max_len:
            raise ValueError(
                f"{where}: a prompt of {len(r.prompt)} tokens + max_new_tokens={r.max_new_tokens} exceeds {room}"
            )


# ------------------------------------------------------------------------------------------ device: the slots
class Slots(NamedTuple):
    """Every slot's cache and decoding state; a slot is free when not `active`."""

    cache: KVCache  # length [slots]: the next cache index each slot writes
    token: jax.Array  # [slots] int32: sampled, not yet emitted
    pos: jax.Array  # [slots] int32: that token's position
    count: jax.Array  # [slots] int32: tokens emitted so far
    budget: jax.Array  # [slots] int32: max_new_tokens
    active: jax.Array  # [slots] bool
    key: jax.Array  # [slots, 2] uint32: the sample's key data
    temperature: jax.Array  # [slots] float32
    top_p: jax.Array  # [slots] float32
    top_k: jax.Array  # [slots] int32
    eos: jax.Array  # [slots, eos_width] int32, -1 padded

    @classmethod
    def init(cls, cfg: ModelConfig, slots: int, max_len: int, dtype, eos_width: int) -> Slots:
        cache = KVCache.init(cfg, slots, max_len, dtype)

        def zeros():  # one buffer each: the state is donated, and a buffer cannot be donated twice
            return jnp.zeros((slots,), jnp.int32)

        return cls(
            cache=cache._replace(length=zeros()),
            token=zeros(),
            pos=zeros(),
            count=zeros(),
            budget=zeros(),
            active=jnp.zeros((slots,), bool),
            key=jnp.zeros((slots, 2), jnp.uint32),
            temperature=jnp.zeros((slots,), jnp.float32),
            top_p=jnp.ones((slots,), jnp.float32),
            top_k=zeros(),
            eos=jnp.full((slots, eos_width), -1, jnp.int32),
        )


def slot_shardings(slots: Slots, mesh: jax.sharding.Mesh) -> Slots:
    """Slots over a mesh as the trainer lays out a batch and its weights: rows over `data` (and `fsdp`), the cache's
    key/value heads over `tensor` (where they divide), the rest replicated."""
    rows = tuple(a for a in ("data", "fsdp") if mesh.shape.get(a, 1) > 1) or None
    if rows is not None and slots.token.shape[0] % math.prod(mesh.shape[a] for a in rows):
        rows = None
    kv = slots.cache.k.shape[2]
    heads = "tensor" if mesh.shape.get("tensor", 1) > 1 and kv % mesh.shape["tensor"] == 0 else None

    def spec(*axes):
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*axes))

    per_row = spec(rows)
    cache = KVCache(
        k=spec(None, rows, heads, None, None),
        v=spec(None, rows, heads, None, None),
        positions=spec(rows, None),
        length=per_row,
    )
    return Slots(cache, *[spec(rows, None) if f in ("key", "eos") else per_row for f in Slots._fields[1:]])


def _draw(logits, key, index, temperature, top_p, top_k) -> jax.Array:
    """Token number `index` of each row `[rows]`, drawn with the row's own sample key data and settings."""
    keys = jax.vmap(lambda k, i: jax.random.fold_in(jax.random.wrap_key_data(k), i))(key, index)
    return sample_rows(logits, keys, temperature, top_p, top_k)


def _sample(slots: Slots, logits: jax.Array, index: jax.Array) -> jax.Array:
    """Each slot's token number `index` `[slots]`."""
    return _draw(logits, slots.key, index, slots.temperature, slots.top_p, slots.top_k)


@functools.partial(jax.jit, static_argnames=("decoder",))
def prefill(decoder: Decoder, weights: Weights, tokens: jax.Array, positions: jax.Array):
    """`[1, width]` left-padded prompt -> (next-token logits `[1, vocab]`, its cache)."""
    return decoder.prefill(weights, tokens, positions)


@functools.partial(jax.jit, donate_argnums=(0,))
def insert(
    slots: Slots,
    prompt: KVCache,  # batch 1, scalar length
    logits: jax.Array,  # [1, vocab]
    slot: jax.Array,  # [] int32
    key: jax.Array,  # [2] uint32 key data of this sample
    settings: tuple[jax.Array, ...],  # temperature, top_p, top_k, budget: [] each
    eos: jax.Array,  # [eos_width] int32
) -> Slots:
    """The prompt's cache copied into `slot`, its first token drawn: the slot is active from the next chunk."""
    temperature, top_p, top_k, budget = settings
    width = prompt.positions.shape[1]
    max_len = slots.cache.positions.shape[1]
    row = jnp.full((max_len,), -1, jnp.int32).at[:width].set(prompt.positions[0])
    cache = KVCache(
        k=slots.cache.k.at[:, slot, :, :width].set(prompt.k[:, 0]),
        v=slots.cache.v.at[:, slot, :, :width].set(prompt.v[:, 0]),
        positions=slots.cache.positions.at[slot].set(row),
        length=slots.cache.length.at[slot].set(prompt.length),
    )
    slots = slots._replace(
        cache=cache,
        pos=slots.pos.at[slot].set(jnp.max(prompt.positions) + 1),
        count=slots.count.at[slot].set(0),
        budget=slots.budget.at[slot].set(budget),
        active=slots.active.at[slot].set(True),
        key=slots.key.at[slot].set(key),
        temperature=slots.temperature.at[slot].set(temperature),
        top_p=slots.top_p.at[slot].set(top_p),
        top_k=slots.top_k.at[slot].set(top_k),
        eos=slots.eos.at[slot].set(eos),
    )
    first = _draw(logits, key[None], jnp.zeros((1,), jnp.int32), temperature[None], top_p[None], top_k[None])[0]
    return slots._replace(token=slots.token.at[slot].set(first))


@functools.partial(jax.jit, donate_argnums=(0,))
def release(slots: Slots, slot: jax.Array) -> Slots:
    """Stop a slot early (its sample met a stop string)."""
    return slots._replace(active=slots.active.at[slot].set(False))


@functools.partial(jax.jit, static_argnames=("decoder", "steps", "sampled", "window"), donate_argnums=(2,))
def decode(
    decoder: Decoder, weights: Weights, slots: Slots, *, steps: int, window: int, sampled: bool = True
) -> tuple[Slots, jax.Array]:
    """Up to `steps` decode steps for every slot (fewer once none is active): each active slot emits its token,
    stops at EOS or its budget, otherwise feeds it and draws the next (`sampled=False`: every slot is greedy, the
    draw is an argmax). Attention reads the cache's first `window` slots: every slot's length + `steps` must fit.
    Returns `[slots, steps]` emitted ids, -1 where a slot emitted nothing."""
    out = jnp.full((slots.token.shape[0], steps), -1, jnp.int32)

    def body(carry):
        i, slots, out = carry
        emit = slots.active
        out = out.at[:, i].set(jnp.where(emit, slots.token, -1))
        count = slots.count + emit
        ended = jnp.any(slots.token[:, None] == slots.eos, axis=1) | (count >= slots.budget)
        active = emit & ~ended
        logits, cache = decoder.step(weights, slots.token, slots.pos, slots.cache, window)
        cache = cache._replace(length=jnp.where(active, cache.length, slots.cache.length))
        nxt = _sample(slots, logits, count) if sampled else jnp.argmax(logits, axis=-1).astype(jnp.int32)
        slots = slots._replace(
            cache=cache,
            token=jnp.where(active, nxt, slots.token),
            pos=slots.pos + active,
            count=count,
            active=active,
        )
        return i + 1, slots, out

    def keep_going(carry):
        i, slots, _ = carry
        return (i < steps) & jnp.any(slots.active)

    _, slots, out = jax.lax.while_loop(keep_going, body, (jnp.int32(0), slots, out))
    return slots, out


# ------------------------------------------------------------------------------------------- host: scheduler
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
    (`bitune_jax.load(..., mesh=)`), and jit partitions the three programs from the two."""

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
                self.decoder, self.weights, slots, steps=self.steps_per_sync, window=window, sampled=sampled
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
