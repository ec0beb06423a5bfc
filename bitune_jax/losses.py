"""Token-level losses and accuracy on selected positions (the answer / response tokens only)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def masked_token_loss(
    logits: jax.Array,  # [batch, rows, vocab] float32
    targets: jax.Array,  # [batch, rows] int32
    mask: jax.Array,  # [batch, rows] bool: rows that count
    per_token: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over examples (rows with targets) of each example's mean cross-entropy (`per_token`: the mean over all
    target tokens of the batch instead), plus token accuracy.

    Accuracy is the argmax match of the same logits (no second forward), as docs/method.md A defines it.
    """
    nll, hit = _token_stats(logits, targets)
    return _reduce(nll, hit, mask, per_token)


def _token_stats(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row negative log-likelihood and argmax hit, `[batch, rows]` each."""
    nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return nll, jnp.argmax(logits, axis=-1) == targets


def _reduce(
    nll: jax.Array, hit: jax.Array, mask: jax.Array, per_token: bool = False
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One example a row: per-example sums of `[batch, rows]` token statistics, then `_summarize`."""
    return _summarize(jnp.where(mask, nll, 0.0).sum(1), mask.sum(1), (hit & mask).sum(1), per_token)


def _summarize(
    nll: jax.Array,  # [examples] summed answer-token cross-entropy
    count: jax.Array,  # [examples] answer tokens (int)
    correct: jax.Array,  # [examples] answer tokens predicted right (int)
    per_token: bool,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss and metrics of a batch from its per-example sums, whatever the layout the tokens came in."""
    per_example = nll / jnp.maximum(count, 1)
    # Examples without a single target (filler rows or slots of a last, partial batch) do not count.
    real = count > 0
    loss = jnp.where(real, per_example, 0.0).sum() / jnp.maximum(real.sum(), 1)
    if per_token:
        loss = nll.sum() / jnp.maximum(count.sum(), 1)
    metrics = {
        "loss": loss,
        "token_accuracy": correct.sum() / jnp.maximum(count.sum(), 1),
        "tokens": count.sum(),
        "correct": correct.sum(),  # answer tokens predicted right: epoch accuracy is a ratio of exact counts
        "per_example_loss": per_example,
        "per_example_accuracy": correct / jnp.maximum(count, 1),
    }
    return loss, metrics


def hidden_token_loss(
    hidden: jax.Array,  # [batch, rows, dim] final hidden states of the rows that predict targets
    targets: jax.Array,  # [batch, rows] int32
    mask: jax.Array,  # [batch, rows] bool
    unembed: Callable[[jax.Array], jax.Array],  # [batch, n, dim] -> float32 logits [batch, n, vocab]
    chunk: int = 0,
    per_token: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`masked_token_loss` of `unembed(hidden)`, optionally `chunk` rows at a time.

    With a chunk, logits exist for one chunk at a time and are recomputed in the backward pass, so long sequences
    with large vocabularies (32k rows x 100k tokens is 13 GB of float32 logits) fit; the numbers are the same.
    Chunk `i` holds the strided rows `i, i + n, i + 2n, ...` (the loss is a sum, so the order is free): rows split in
    contiguous slices over devices (sequence parallelism) then give every device its share of every chunk.
    """
    return _reduce(*_hidden_stats(hidden, targets, unembed, chunk), mask, per_token)


def example_token_loss(
    hidden: jax.Array,  # [tokens, dim] final hidden states of the slots that predict answer tokens, any example
    targets: jax.Array,  # [tokens] int32
    example: jax.Array,  # [tokens] int32: the example slot each token belongs to, -1 for padding
    num_examples: int,
    unembed: Callable[[jax.Array], jax.Array],
    chunk: int = 0,
    per_token: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`hidden_token_loss` of answer tokens laid end to end (a packed batch's), reduced per example: the same
    loss and metrics, with `per_example_*` of length `num_examples`, and no unembedding spent on padding."""
    nll, hit = _hidden_stats(hidden[None], targets[None], unembed, chunk)
    mask = example >= 0
    ids = jnp.where(mask, example, num_examples)  # padding: a bin of its own, dropped

    def per_example(x):
        return jax.ops.segment_sum(jnp.where(mask, x, 0), ids, num_examples + 1)[:num_examples]

    return _summarize(
        per_example(nll[0]), per_example(mask.astype(jnp.int32)), per_example(hit[0].astype(jnp.int32)), per_token
    )


def _hidden_stats(hidden, targets, unembed, chunk):
    """Per-row negative log-likelihood and argmax hit `[batch, rows]` of `unembed(hidden)`, `chunk` rows at a time."""
    rows = hidden.shape[1]
    if not chunk or rows <= chunk:
        return _token_stats(unembed(hidden), targets)
    n = -(-rows // chunk)
    pad = n * chunk - rows
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    batch, dim = hidden.shape[0], hidden.shape[2]
    # row r = c * n + i -> [batch, chunk c, chunk index i]; scan over i.
    xs = (
        hidden.reshape(batch, chunk, n, dim).transpose(2, 0, 1, 3),
        targets.reshape(batch, chunk, n).transpose(2, 0, 1),
    )

    @jax.checkpoint
    def one(x, t):
        return _token_stats(unembed(x), t)

    nll, hit = jax.lax.map(lambda xt: one(*xt), xs)  # [n, batch, chunk]
    nll = nll.transpose(1, 2, 0).reshape(batch, n * chunk)[:, :rows]
    hit = hit.transpose(1, 2, 0).reshape(batch, n * chunk)[:, :rows]
    return nll, hit
