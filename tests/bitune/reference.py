"""docs/method.md B steps 1-4 done literally: one example at a time, three model calls, an explicit cache.

Small and obvious on purpose; the fused batched implementation is checked against it.
"""

import functools

import jax
import jax.numpy as jnp

from bitune_jax.bitune import BituneConfig
from bitune_jax.bitune.forward import mixing_weights
from bitune_jax.models.transformer import KVCache, forward


def literal_example(base, trainable, prompt, answer, cfg, bcfg: BituneConfig):
    """Returns `(answer_logits [A, vocab], mean answer cross-entropy)` for one example."""
    P, A = len(prompt), len(answer)
    causal = trainable["causal"]
    bidir = causal if bcfg.shared_adapters else trainable["bidir"]
    peft = bcfg.peft
    cache = KVCache.init(cfg, 1, P + A)
    if P > 1:
        head = jnp.asarray([prompt[: P - 1]], jnp.int32)
        # 1. bidirectional prompt pass over prompt[:P-1] (bidir adapters)
        prefix = jnp.asarray([P - 1]) if bcfg.bidirectional else None
        _, bidir_cache = forward(base, head, cfg, prefix_len=prefix, cache=cache, adapters=bidir, peft=peft)
        # 2. causal prompt pass over prompt[:P-1] (causal adapters)
        _, causal_cache = forward(base, head, cfg, cache=cache, adapters=causal, peft=peft)
        # 3. mix per layer in float32: alpha = |w| / (tau + |w|)
        w = mixing_weights(trainable, cfg, bcfg)
        mixed = {}
        for name, c, b in (("k", causal_cache.k, bidir_cache.k), ("v", causal_cache.v, bidir_cache.v)):
            a = jnp.abs(w["w_" + name]) / (bcfg.tau + jnp.abs(w["w_" + name]))
            a = a[:, None, None, None, None] if a.ndim == 1 else a[:, None, :, None, None]  # cache: [L, B, H, S, D]
            mixed[name] = ((1 - a) * c.astype(jnp.float32) + a * b.astype(jnp.float32)).astype(c.dtype)
        cache = causal_cache._replace(k=mixed["k"], v=mixed["v"])
    # 4. answer pass over prompt[P-1:] + answer at positions P-1..., causal adapters, over the mixed cache
    rest = jnp.asarray([list(prompt[P - 1 :]) + list(answer)], jnp.int32)
    positions = jnp.arange(P - 1, P + A, dtype=jnp.int32)[None]
    logits, _ = forward(base, rest, cfg, positions=positions, cache=cache, adapters=causal, peft=peft)
    answer_logits = logits[0, :A]  # row j predicts answer[j]
    logp = answer_logits - jnp.log(jnp.exp(answer_logits).sum(-1, keepdims=True))
    nll = -logp[jnp.arange(A), jnp.asarray(answer)]
    return answer_logits, nll.mean()


def literal_loss(trainable, base, pairs, cfg, bcfg):
    """Mean over examples of the per-example answer loss (the paper's accumulation), and each answer's logits."""
    results = [literal_example(base, trainable, p, a, cfg, bcfg) for p, a in pairs]
    return sum(loss for _, loss in results) / len(pairs), [logits for logits, _ in results]


# These tiny programs are all compile time (twelve model passes and their backward in one program): XLA's backend
# optimizations roughly double it and buy nothing at this size. The math checked is the same at any level.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.partial(jax.jit, static_argnames=("pairs", "cfg", "bcfg"), compiler_options=FAST_COMPILE)
def _literal_grad(trainable, base, pairs, cfg, bcfg):
    return jax.value_and_grad(literal_loss, has_aux=True)(trainable, base, pairs, cfg, bcfg)


def literal_grad(base, trainable, pairs, cfg, bcfg):
    """`((loss, answer logits per example), d loss / d trainable)`, compiled once per batch of pairs."""
    pairs = tuple((tuple(p), tuple(a)) for p, a in pairs)
    return _literal_grad(trainable, base, pairs, cfg, bcfg)
