"""Performance accounting: tokens/s over a window of steps, model FLOPs by the PaLM rule, and MFU.

MFU's denominator is the datasheet peak of a known accelerator (`accelerators.peak_flops`), with a measured matmul
peak only as the fallback for unknown devices; the run log says which.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.data.batch import SFTBatch
from bitune_jax.train.accelerators import peak_flops


class Throughput:
    """Tokens per second over a sliding window of recent steps (the first, compiling step skews a plain mean)."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._times: list[float] = []
        self._tokens: list[float] = []

    def update(self, tokens: float, now: float | None = None) -> float | None:
        """Record that `tokens` were processed by `now`; returns tokens/s, None until two timestamps exist."""
        self._times.append(time.perf_counter() if now is None else now)
        self._tokens.append(float(tokens))
        self._times, self._tokens = self._times[-self.window - 1 :], self._tokens[-self.window - 1 :]
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return None
        return sum(self._tokens[1:]) / (self._times[-1] - self._times[0])


def model_flops_per_token(
    num_params: int,
    seq_len: int,
    num_layers: int,
    dim: int,
    backward_weight_grads: bool = True,
    *,
    causal: bool = False,
) -> float:
    """Training FLOPs per token (the MFU numerator), by the PaLM (Chowdhery et al. 2022, app. B) rule.

    A matmul with N weights costs 2N FLOPs per token forward, 2N backward for the input gradient, and 2N backward
    for the weight gradient. Attention scores and the weighted sum cost 4 * L * d * T forward per token (T =
    seq_len) and twice that backward (both operands need gradients; there are no weights):
        full fine-tune:   6N + 12 L d T
        frozen base:      4N + 12 L d T   (LoRA, Bitune: no weight gradients for the base; the adapters' own
                                           FLOPs are a rounding error and are not counted)
    num_params: parameters that take part in matmuls, trainable and frozen (count the embedding table only when
        tied, since then it is the output head). causal=True halves the attention term, for kernels that skip
        fully masked blocks; the default follows PaLM and most published MFU numbers. Rematerialization is not
        counted (MFU counts model FLOPs, not hardware FLOPs). A Bitune step runs two streams: scale accordingly.
    """
    for name, v in (("num_params", num_params), ("seq_len", seq_len), ("num_layers", num_layers), ("dim", dim)):
        if v < 0:
            raise ValueError(f"model_flops_per_token {name} must be >= 0, got {v}")
    dense = (6.0 if backward_weight_grads else 4.0) * num_params
    attention = 12.0 * num_layers * dim * seq_len * (0.5 if causal else 1.0)
    return dense + attention


@dataclasses.dataclass(frozen=True)
class MatmulWeights:
    """The weights a token's matmuls use: the stacked layer kernels, and the output head (`vocab x dim`, the
    embedding table when tied). Norms and the embedding lookup are not matmuls."""

    stack: int
    head: int

    @classmethod
    def of(cls, params, cfg) -> MatmulWeights:
        """From base parameters (or their `jax.eval_shape`) and their `ModelConfig`."""
        return cls(
            sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params["layers"]) if len(x.shape) == 3),
            cfg.vocab_size * cfg.dim,
        )


def step_model_flops(
    kind: str, batch: SFTBatch, prompt_width: int, weights: MatmulWeights, num_layers: int, dim: int
) -> float:
    """Model FLOPs of one step on `batch` (filler rows have length 0): the one count the loop's MFU, the
    benchmarks and the scale plan use.

    Every real token runs the layer stack at the batch's width; the head runs on the answer tokens only (the
    objectives unembed only the rows a loss reads); `kind="full"` adds the weight gradients. Bitune also runs the
    bidirectional prompt stream (stack only, frozen) over each row's first `prompt_len - 1` tokens.
    """
    length, prompt_len = np.asarray(batch.length), np.asarray(batch.prompt_len)
    # attention context: the row, or in a packed batch (segments) the longest example
    width = int(np.shape(batch.tokens)[1]) if getattr(batch, "segment_ids", None) is None else int(length.max())
    tokens = float(np.sum(length))
    answer = float(np.sum(np.maximum(length - prompt_len, 0)))
    full = kind == "full"
    flops = tokens * model_flops_per_token(weights.stack, width, num_layers, dim, full)
    flops += answer * model_flops_per_token(weights.head, 0, num_layers, dim, full)
    if kind == "bitune":
        prompt_tokens = float(np.sum(np.maximum(prompt_len - 1, 0)))
        flops += prompt_tokens * model_flops_per_token(weights.stack, prompt_width, num_layers, dim, False)
    return flops


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the peak (both for the same set of devices)."""
    if peak_flops_per_s <= 0:
        raise ValueError(f"peak_flops_per_s must be > 0, got {peak_flops_per_s}")
    return tokens_per_s * flops_per_token / peak_flops_per_s


def measure_matmul_peak_flops(
    dtype: Any = jnp.bfloat16, size: int = 4096, *, repeats: int = 10, device: jax.Device | None = None
) -> float:
    """FLOP/s of a jitted `size x size` square matmul on one device: the best of `repeats` timed runs.

    A measured peak rather than a datasheet one, so MFU on a CPU or a throttled GPU still means "fraction of what
    this machine's matmul unit does". Use a size big enough to be compute-bound (4096 on GPU; 1024 on CPU).
    """
    device = device if device is not None else jax.devices()[0]
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(ka, (size, size), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(kb, (size, size), jnp.float32).astype(dtype), device)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()  # compile and warm up
    best = math.inf
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


@dataclasses.dataclass
class StepPerformance:
    """Tokens/s over a window of steps and MFU from the objective's model FLOPs over the accelerators' peak."""

    weights: MatmulWeights
    num_layers: int
    dim: int
    kind: str
    peak: float  # FLOP/s of all devices together
    peak_source: str
    throughput: Throughput

    @classmethod
    def create(cls, kind: str, base_params, cfg, dtype: str) -> StepPerformance:
        peak, source = peak_flops(
            jax.devices()[0].device_kind,
            dtype,
            lambda: measure_matmul_peak_flops(jnp.float32 if dtype == "float32" else jnp.bfloat16, 1024),
        )
        return cls(
            weights=MatmulWeights.of(base_params, cfg),
            num_layers=cfg.num_layers,
            dim=cfg.dim,
            kind=kind,
            peak=peak * jax.device_count(),
            peak_source=source,
            throughput=Throughput(),
        )

    def rates(self, tokens_per_s: float | None, full: SFTBatch, prompt_width: int) -> dict[str, float]:
        if not tokens_per_s:
            return {}
        flops = step_model_flops(self.kind, full, prompt_width, self.weights, self.num_layers, self.dim)
        return {
            "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * flops / max(float(np.sum(full.length)), 1.0) / self.peak,
        }


MAX_STEPS_IN_FLIGHT = 2  # dispatched steps the host may run ahead of the device (bounds queued batches)


class InFlight:
    """Lets the host run at most `limit` steps ahead of the device: enough to hide batch preparation and dispatch,
    few enough that queued batches stay bounded and a SIGTERM is acted on within a step or two."""

    def __init__(self, limit: int):
        self.limit, self._pending = limit, collections.deque()

    def add(self, result: jax.Array) -> None:
        self._pending.append(result)
        if len(self._pending) > self.limit:
            jax.block_until_ready(self._pending.popleft())
