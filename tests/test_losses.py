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
    per_token, m_token = masked_token_loss(logits, targets, mask, per_token=True)
    np.testing.assert_allclose(per_token, nll[mask].mean(), rtol=1e-6)  # long answers weigh more
    assert not np.isclose(per_token, loss)
    np.testing.assert_allclose(m_token["per_example_loss"], m["per_example_loss"], rtol=1e-6)  # statistics unchanged


def test_chunked_loss_equals_whole_loss_and_gradients():
    import jax

    from bitune_jax.losses import hidden_token_loss

    rng = np.random.RandomState(1)
    hidden = rng.randn(2, 7, 5).astype(np.float32)
    w = rng.randn(5, 11).astype(np.float32)
    targets = rng.randint(0, 11, size=(2, 7))
    mask = rng.rand(2, 7) > 0.3

    def loss(hidden, w, chunk):
        return hidden_token_loss(hidden, targets, mask, lambda h: h @ w, chunk)

    whole, m_whole = loss(hidden, w, 0)
    chunked, m_chunked = loss(hidden, w, 3)  # 7 rows in chunks of 3: the last chunk is padded
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    np.testing.assert_allclose(m_chunked["token_accuracy"], m_whole["token_accuracy"], rtol=1e-6)
    g_whole = jax.grad(lambda h, w: loss(h, w, 0)[0], argnums=(0, 1))(hidden, w)
    g_chunked = jax.grad(lambda h, w: loss(h, w, 3)[0], argnums=(0, 1))(hidden, w)
    for a, b in zip(g_chunked, g_whole):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
