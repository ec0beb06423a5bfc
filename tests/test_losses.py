"""Token accuracy and loss against a NumPy computation on the same logits."""

import numpy as np

from bitune_jax.losses import masked_token_loss


def test_matches_numpy():
    rng = np.random.RandomState(0)
    logits = rng.randn(3, 7, 11).astype(np.float32)
    targets = rng.randint(0, 11, size=(3, 7))
    targets[0, :4] = logits[0, :4].argmax(-1)  # some hits
    mask = np.ones((3, 7), bool)
    mask[1, 5:] = False
    mask[2, :] = False  # a filler row: no targets, does not count as an example
    loss, m = masked_token_loss(logits, targets, mask)

    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    per_example = [nll[b][mask[b]].mean() for b in range(2)]
    hits = (logits.argmax(-1) == targets) & mask
    np.testing.assert_allclose(loss, np.mean(per_example), rtol=1e-6)
    np.testing.assert_allclose(m["token_accuracy"], hits.sum() / mask.sum(), rtol=1e-6)
    np.testing.assert_allclose(m["per_example_accuracy"][:2], [hits[b][mask[b]].mean() for b in range(2)], rtol=1e-6)
    assert int(m["tokens"]) == mask.sum() and m["token_accuracy"] > 0
