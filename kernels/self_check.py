"""Trust a Pallas kernel only where it has been seen to work: the self-check behind `impl="auto"`.

The first time a process lets `auto` pick the Pallas kernel for a combination of platform, dtype, head dim and mask
kind (causal or not, sliding window, bidirectional prefix, segment ids, logit soft-cap), it compiles the kernel on a
small case of that combination, forward and backward, and compares it with the dense XLA reference. A compile error
or a difference beyond `TOLERANCE` makes `auto` use the blockwise XLA path for that combination instead: one line
says which and why, and `fallbacks()` lists them for the run's record. An explicit `impl="pallas"` is never checked
and fails loudly. Verdicts are cached for the process; a check costs one small compile and run of the kernel and
the reference (the case is `CHECK_LEN` tokens).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .mask import MaskSpec

CHECK_LEN = 256  # two query tiles of 128, so block skipping across tiles is exercised
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 1e-2}  # of the reference's largest magnitude

_verdicts: dict[KernelKey, str | None] = {}  # None: verified; a reason: fell back


@dataclasses.dataclass(frozen=True)
class KernelKey:
    """What a kernel's correctness can depend on, beyond the lengths."""

    platform: str
    dtype: str
    head_dim: int
    causal: bool
    window: bool
    prefix: bool
    segments: bool
    logit_softcap: float | None

    @classmethod
    def of(cls, q: jax.Array, spec: MaskSpec, logit_softcap: float | None, platform: str) -> KernelKey:
        return cls(
            platform=platform,
            dtype=jnp.dtype(q.dtype).name,
            head_dim=int(q.shape[-1]),
            causal=bool(spec.causal),
            window=spec.window is not None,
            prefix=spec.prefix_len is not None,
            segments=spec.q_segment_ids is not None,
            logit_softcap=logit_softcap,
        )

    def describe(self) -> str:
        mask = "+".join(
            n for n, on in (("causal", self.causal), ("window", self.window), ("prefix", self.prefix)) if on
        )
        extra = "+segments" if self.segments else ""
        extra += f", softcap {self.logit_softcap:g}" if self.logit_softcap else ""
        return f"{self.platform} {self.dtype}, head dim {self.head_dim}, {mask or 'full'} mask{extra}"


def _case(key: KernelKey, length: int):
    """q, k, v, a cotangent and the mask of a case of `key` (two kv heads, two query heads each)."""
    kq, kk, kv, kd = jax.random.split(jax.random.key(0), 4)
    shape = (1, length, 4, key.head_dim)
    kv_shape = (1, length, 2, key.head_dim)
    dtype = jnp.dtype(key.dtype)
    q, k, v = (jax.random.normal(r, s, dtype) for r, s in ((kq, shape), (kk, kv_shape), (kv, kv_shape)))
    positions = jnp.arange(length, dtype=jnp.int32)[None]
    segments = (positions >= length // 2 + 5).astype(jnp.int32) + 1  # two examples, one boundary inside a tile
    spec = MaskSpec(
        q_positions=positions,
        kv_positions=positions,
        window=jnp.int32(70) if key.window else None,
        prefix_len=jnp.asarray([length // 3], jnp.int32) if key.prefix else None,
        q_segment_ids=segments if key.segments else None,
        kv_segment_ids=segments if key.segments else None,
        causal=key.causal,
    )
    return q, k, v, jax.random.normal(kd, shape, dtype), spec


def _forward_and_grads(fn: Callable, key: KernelKey, length: int):
    q, k, v, cotangent, spec = _case(key, length)
    scale = key.head_dim**-0.5

    def loss(q, k, v):
        out = fn(q, k, v, spec, scale=scale, logit_softcap=key.logit_softcap)
        return jnp.sum(out.astype(jnp.float32) * cotangent.astype(jnp.float32)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return {"out": out, "dq": grads[0], "dk": grads[1], "dv": grads[2]}


def compare(key: KernelKey, kernel: Callable, reference: Callable, length: int = CHECK_LEN) -> dict[str, tuple]:
    """`{"out" | "dq" | "dk" | "dv": (largest difference, tolerance)}` of `kernel` against `reference` on a case of
    `key` with `length` tokens; raises what the kernel's compile raises."""
    got = _forward_and_grads(kernel, key, length)
    want = _forward_and_grads(reference, key, length)
    tolerance = TOLERANCE.get(key.dtype, 3e-2)
    out = {}
    for name in ("out", "dq", "dk", "dv"):
        a, b = np.asarray(got[name], np.float32), np.asarray(want[name], np.float32)
        error = float(np.max(np.abs(a - b)))
        out[name] = (error if np.isfinite(error) else float("inf"), tolerance * max(1.0, float(np.max(np.abs(b)))))
    return out


def _check(key: KernelKey, kernel: Callable, reference: Callable) -> str | None:
    """None if `kernel` compiles and matches `reference` on `key`'s small case, else why not."""
    try:
        errors = compare(key, kernel, reference)
    except Exception as e:  # a compile or lowering failure of any kind is a reason to fall back
        return f"it does not compile ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
    for name, (error, tolerance) in errors.items():
        if not error <= tolerance:
            return f"its {name} differs from the XLA reference by {error:.3g} (tolerance {tolerance:.3g})"
    return None


def verified_impl(key: KernelKey, kernel: Callable, reference: Callable, say: Callable[[str], None] = print) -> str:
    """ "pallas" if the kernel passed its self-check for `key` (run once per process), else "blockwise"."""
    if key not in _verdicts:
        # In a thread of its own: JAX's tracing state is per thread, so the check compiles and runs as a program of
        # its own even when `attention` is called while a model is being traced.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            _verdicts[key] = pool.submit(_check, key, kernel, reference).result()
        if _verdicts[key] is not None:
            say(
                f"attention: the Pallas kernel failed its self-check for {key.describe()}: {_verdicts[key]}; "
                "impl='auto' uses the blockwise XLA path for it (impl='pallas' would use it anyway)"
            )
    return "pallas" if _verdicts[key] is None else "blockwise"


def fallbacks() -> list[dict]:
    """Every combination this process moved off Pallas, with the reason, for the run's record."""
    return [{**dataclasses.asdict(key), "reason": reason} for key, reason in _verdicts.items() if reason is not None]


def forget() -> None:
    """Drop the cached verdicts (tests plant kernels and check again)."""
    _verdicts.clear()
