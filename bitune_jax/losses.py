"""Token-level losses and accuracy on selected positions (the answer / response tokens only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_token_loss(
    logits: jax.Array,  # [batch, rows, vocab] float32
    targets: jax.Array,  # [batch, rows] int32
    mask: jax.Array,  # [batch, rows] bool: rows that count
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over examples (rows with targets) of each example's mean cross-entropy, plus token accuracy.

    Accuracy is the argmax match of the same logits (no second forward), as METHOD.md A defines it.
    """
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    count = mask.sum(1)
    per_example = jnp.where(mask, nll, 0.0).sum(1) / jnp.maximum(count, 1)
    correct = (jnp.argmax(logits, axis=-1) == targets) & mask
    # Rows without a single target (filler rows of a last, partial batch) do not count as examples.
    real = count > 0
    loss = jnp.where(real, per_example, 0.0).sum() / jnp.maximum(real.sum(), 1)
    metrics = {
        "loss": loss,
        "token_accuracy": correct.sum() / jnp.maximum(mask.sum(), 1),
        "tokens": mask.sum(),
        "per_example_loss": per_example,
        "per_example_accuracy": correct.sum(1) / jnp.maximum(count, 1),
    }
    return loss, metrics
