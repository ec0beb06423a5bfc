"""Nested subsets, per-epoch reshuffles, dummy rows that carry no loss, exact resume, and process slices."""

import json

import numpy as np
import pytest

from bitune_jax.data import (
    DUMMY_ID,
    EpochBatches,
    SFTBatch,
    TokenizedExample,
    authors_epoch_order,
    derive_seed,
    nested_sizes,
    nested_subset,
    split_pool,
)


def make_examples(n: int, seed: int = 0) -> list[TokenizedExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p, a = int(rng.integers(1, 12)), int(rng.integers(1, 30))
        out.append(
            TokenizedExample(
                prompt_ids=rng.integers(5, 50, p).astype(np.int32),
                answer_ids=rng.integers(5, 50, a).astype(np.int32),
                source=f"d.jsonl:{i + 1}",
            )
        )
    return out


EXAMPLES = make_examples(23)
PAD = 0


def batches(**kw) -> EpochBatches:
    return EpochBatches(EXAMPLES, kw.pop("batch_size", 4), seed=kw.pop("seed", 7), pad_id=PAD, **kw)


def same(a: SFTBatch, b: SFTBatch) -> bool:
    return all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b, strict=True))


def test_nested_subset_prefixes():
    big, small = nested_subset(1000, 400, seed=1), nested_subset(1000, 200, seed=1)
    assert np.array_equal(small, big[:200]) and len(set(big.tolist())) == 400 and big.max() < 1000
    assert not np.array_equal(nested_subset(1000, 200, seed=2), small)
    assert nested_sizes(1000) == [100, 200, 400, 800] and nested_sizes(51_200)[-1] == 51_200
    assert len({derive_seed("subset", 0), derive_seed("epoch", 0, 0), derive_seed("epoch", 0, 1)}) == 3
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="subset size must be in 1..1000"):
            nested_subset(1000, bad, seed=1)


@pytest.mark.parametrize("bucket_chunks", [0, 2])
def test_every_example_once_per_epoch(bucket_chunks):
    eb = batches(bucket_chunks=bucket_chunks)
    assert eb.batches_per_epoch == 6
    for epoch in range(3):
        ids = np.concatenate([eb.batch(epoch, i).example_id for i in range(eb.batches_per_epoch)])
        assert sorted(ids[ids >= 0].tolist()) == list(range(23)) and (ids == DUMMY_ID).sum() == 1
        assert ids[-1] == DUMMY_ID  # the partial batch is the last of its epoch


def test_reshuffle_per_epoch_is_a_function_of_seed_and_epoch():
    eb = batches()
    plans = [eb.epoch_plan(e).copy() for e in range(3)]
    assert not np.array_equal(plans[0], plans[1]) and not np.array_equal(plans[1], plans[2])
    fresh = batches()  # a restarted process, asking for epoch 2 first
    assert np.array_equal(fresh.epoch_plan(2), plans[2]) and np.array_equal(fresh.epoch_plan(0), plans[0])
    assert not np.array_equal(batches(seed=8).epoch_plan(0), plans[0])


def test_batch_layout_and_width():
    eb = batches(multiple=16)
    for i in range(eb.batches_per_epoch):
        b = eb.batch(1, i)
        assert [(v.dtype.name, v.shape[0]) for v in b] == [("int32", 4)] * 4
        real = b.example_id >= 0
        width = b.tokens.shape[1]
        assert width % 16 == 0 and width - 16 < b.length[real].max() <= width
        for row, eid in enumerate(b.example_id):
            if eid < 0:
                continue
            e, p, n = EXAMPLES[eid], b.prompt_len[row], b.length[row]
            assert p == len(e.prompt_ids) and n == e.length
            assert np.array_equal(b.tokens[row, :p], e.prompt_ids)
            assert np.array_equal(b.tokens[row, p:n], e.answer_ids) and (b.tokens[row, n:] == PAD).all()
    longest = max(e.length for e in EXAMPLES)
    assert longest % 16
    capped = batches(multiple=16, max_width=longest)
    widths = [capped.batch(0, i).tokens.shape[1] for i in range(capped.batches_per_epoch)]
    assert max(widths) == longest  # rounding up to 16 would pass the cap
    with pytest.raises(ValueError, match=f"{longest} tokens exceed max_width=10"):
        batches(max_width=10)


def test_bucketing_reduces_padding():
    many = make_examples(256, seed=1)
    width = lambda eb: sum(eb.batch(0, i).tokens.size for i in range(eb.batches_per_epoch))  # noqa: E731
    plain = EpochBatches(many, 8, seed=0, pad_id=PAD, multiple=4)
    bucketed = EpochBatches(many, 8, seed=0, pad_id=PAD, multiple=4, bucket_chunks=8)
    assert width(bucketed) < 0.85 * width(plain)
    first = [int(bucketed.batch(0, i).length.max()) for i in range(bucketed.batches_per_epoch)]
    assert first != sorted(first)  # batches are shuffled after sorting within chunks


def test_dummy_rows_carry_no_loss():
    """A dummy row has no answer tokens: the repo's loss mask is empty for it, and the loss over real rows is
    exactly the loss of the batch without it."""
    import jax
    import jax.numpy as jnp

    from bitune_jax.losses import masked_token_loss

    eb = batches()
    b = eb.batch(0, eb.batches_per_epoch - 1)
    dummy = b.example_id == DUMMY_ID
    assert dummy.sum() == 1
    assert (b.prompt_len[dummy] == 1).all() and (b.length[dummy] == 1).all()
    assert (b.tokens[dummy] == PAD).all()
    _, targets, mask = jax.tree.map(jnp.asarray, b).answer_rows()
    assert not np.asarray(mask)[dummy].any()
    logits = jax.random.normal(jax.random.key(0), (*targets.shape, 50))
    _, m = masked_token_loss(logits, targets, mask)
    keep = ~dummy
    _, m_real = masked_token_loss(logits[keep], targets[keep], mask[keep])
    assert m["tokens"] == m_real["tokens"] and np.isclose(m["token_accuracy"], m_real["token_accuracy"])
    per_example = np.asarray(m["per_example_loss"])
    assert per_example[dummy] == 0 and np.isclose(per_example[keep].sum() / keep.sum(), m_real["loss"])


def test_state_restore_resumes_same_batches(tmp_path):
    eb = batches()
    reference = list(eb.iterator(num_epochs=3))
    assert len(reference) == 3 * eb.batches_per_epoch
    it = eb.iterator()
    for _ in range(8):  # into the second epoch
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert state == {"epoch": 1, "index": 2}
    resumed = batches().iterator(num_epochs=3)  # a new process after a crash
    resumed.set_state(state)
    assert all(same(a, b) for a, b in zip(resumed, reference[8:], strict=True))
    for bad in ({"epoch": 0}, {"epoch": 0, "index": 6}, {"epoch": -1, "index": 0}, {"epoch": 0, "index": "1"}):
        with pytest.raises(ValueError, match="data iterator state"):
            resumed.set_state(bad)


def test_grain_checkpoint_handler_roundtrip(tmp_path):
    from etils import epath
    from grain.checkpoint import CheckpointHandler

    eb = batches()
    it = eb.iterator()
    for _ in range(3):
        next(it)
    CheckpointHandler().save(epath.Path(tmp_path), item=it)
    restored = CheckpointHandler().restore(epath.Path(tmp_path), item=batches().iterator())
    assert restored.get_state() == {"epoch": 0, "index": 3} and same(next(restored), next(it))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_reassemble_the_global_batch(process_count):
    eb = batches(batch_size=8, bucket_chunks=1)
    for epoch, index in [(0, 0), (1, 2), (2, eb.batches_per_epoch - 1)]:
        whole = eb.batch(epoch, index)
        parts = [eb.batch(epoch, index, p, process_count) for p in range(process_count)]
        assert all(p.tokens.shape == (8 // process_count, whole.tokens.shape[1]) for p in parts)
        assert same(SFTBatch(*map(np.concatenate, zip(*parts))), whole)
    its = [eb.iterator(num_epochs=1, process_index=p, process_count=process_count) for p in range(process_count)]
    for whole, *parts in zip(eb.iterator(num_epochs=1), *its, strict=True):
        assert same(SFTBatch(*map(np.concatenate, zip(*parts))), whole)


def test_errors():
    eb = batches()
    with pytest.raises(ValueError, match="must divide evenly over 3 processes"):
        eb.batch(0, 0, 0, 3)
    with pytest.raises(ValueError, match="process_index 2 out of range"):
        eb.batch(0, 0, 2, 2)
    with pytest.raises(IndexError, match="an epoch has 6 batches"):
        eb.batch(0, 6)
    with pytest.raises(ValueError, match="at least one example"):
        EpochBatches([], 4, seed=0, pad_id=PAD)


def test_grain_dataset_view():
    eb = batches()
    ds = eb.dataset(3)
    assert len(ds) == eb.batches_per_epoch and same(ds[4], eb.batch(3, 4))


def test_validation_split_is_fixed_disjoint_and_keeps_training_sets_nested():
    from bitune_jax.data import nested_subset, split_pool

    val, small = split_pool(100, 10, 20, seed=42)
    val2, large = split_pool(100, 10, 40, seed=42)
    assert val.tolist() == val2.tolist() and len(val) == 10
    assert large[:20].tolist() == small.tolist() and not set(val) & set(large)
    assert split_pool(100, 0, 20, seed=42)[1].tolist() == nested_subset(100, 20, 42).tolist()
    with pytest.raises(ValueError, match=r"training size must be in 1..90"):
        split_pool(100, 10, 91, seed=42)


def test_authors_epoch_order_is_a_chain_of_datasets_shuffles():
    """The repetition authors' train.py: `dataset = dataset.shuffle(seed=seed + epoch)` each epoch, on the
    previous epoch's order; `datasets` itself is the reference."""
    datasets = pytest.importorskip("datasets")
    n, seed = 257, 42
    ds = datasets.Dataset.from_dict({"row": list(range(n))})
    previous = None
    for epoch in range(5):
        ds = ds.shuffle(seed=seed + epoch)
        expected = np.asarray(ds["row"])
        assert np.array_equal(authors_epoch_order(n, seed, epoch), expected)
        previous = authors_epoch_order(n, seed, epoch, previous)  # the incremental form agrees
        assert np.array_equal(previous, expected)
    batches = EpochBatches(make_examples(n), 1, seed=seed, pad_id=PAD, order="authors")
    for epoch in (3, 0, 4):  # out of order too: the chain is recomputed from the identity
        assert np.array_equal(batches.epoch_plan(epoch)[:, 0], authors_epoch_order(n, seed, epoch))
    assert not np.array_equal(authors_epoch_order(n, seed, 1), authors_epoch_order(n, seed + 1, 1))


def test_authors_order_refuses_bucketing_and_unknown_orders():
    with pytest.raises(ValueError, match="bucketing"):
        EpochBatches(EXAMPLES, 4, seed=1, pad_id=PAD, order="authors", bucket_chunks=2)
    with pytest.raises(ValueError, match="order must be"):
        EpochBatches(EXAMPLES, 4, seed=1, pad_id=PAD, order="sorted")


def test_split_pool_in_file_order_takes_rows_as_they_stand():
    val, train = split_pool(50, 10, 25, seed=3, shuffle=False)
    assert val.tolist() == list(range(10)) and train.tolist() == list(range(10, 35))
    val_s, train_s = split_pool(50, 10, 25, seed=3)
    assert sorted(val_s.tolist() + train_s.tolist()) != list(range(35))  # the default shuffles the pool
