"""The packer: placement fits and keeps every example once, rows come in a small static set of counts, each packed
example is token for token the unpacked one with its own positions and segment, and an epoch of packed batches
holds exactly the examples (and slots) of the unpacked epoch."""

import numpy as np
import pytest

from bitune_jax.data import TokenizedExample
from bitune_jax.data.packing import pack, padding_fraction, place, row_bucket
from bitune_jax.data.pipeline import EpochBatches


def examples(shapes) -> list[TokenizedExample]:
    rng = np.random.RandomState(0)
    return [
        TokenizedExample(
            prompt_ids=rng.randint(3, 50, p).tolist(), answer_ids=rng.randint(3, 50, a).tolist(), source=f"row {i}"
        )
        for i, (p, a) in enumerate(shapes)
    ]


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_placement_fits_every_example_once(method):
    rng = np.random.RandomState(1)
    for _ in range(50):
        lengths = rng.randint(1, 65, rng.randint(1, 30)).tolist()
        rows = place(lengths, 64, method)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in r) <= 64 for r in rows)
        assert all(r == sorted(r) for r in rows)
        assert len(rows) >= -(-sum(lengths) // 64)


def test_first_fit_and_best_fit_as_defined():
    assert place([5, 3, 4, 2, 6], 8, "first_fit") == [[0, 1], [2, 3], [4]]
    assert place([5, 3, 4, 2, 6], 8, "best_fit") == [[3, 4], [0, 1], [2]]  # 6 first, then 5, 4 (new rows), 3, 2
    with pytest.raises(ValueError, match="longer than a packed row"):
        place([9], 8, "first_fit")
    with pytest.raises(ValueError, match="packing method"):
        place([1], 8, "greedy")


def test_row_counts_come_from_a_small_static_set():
    assert [row_bucket(n) for n in range(1, 18)] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 10, 12, 12, 14, 14, 16, 16, 20]
    assert row_bucket(5, multiple=4) == 8 and row_bucket(1, multiple=8) == 8
    assert len({row_bucket(n) for n in range(1, 1025)}) == 36  # 1..1024 rows: 36 shapes
    assert all(row_bucket(n) < n * 1.25 + 1 for n in range(1, 1025))  # at most a quarter filler


def test_packed_rows_hold_each_example_with_its_own_positions_and_segment():
    ex = examples([(3, 9), (7, 2), (1, 5), (5, 6), (2, 3)])
    ids = np.asarray([4, 0, 2, -1, 1, 3])  # a batch as `EpochBatches` plans it, a filler slot inside
    b = pack(ex, ids, 24, pad_id=0, multiple=8, row_multiple=4, prompt_rows=True)
    assert b.tokens.shape[0] % 4 == 0 and len(b.length) == 8  # 6 slots -> 8: both split over 4 devices
    np.testing.assert_array_equal(b.example_id, [4, 0, 2, -1, 1, 3, -1, -1])
    for k, i in enumerate(b.example_id):
        if i < 0:
            assert b.length[k] - b.prompt_len[k] == 0 and not (b.segment_ids == k + 1).any()  # no targets
            continue
        e, r, s = ex[i], b.row[k], b.start[k]
        np.testing.assert_array_equal(b.tokens[r, s : s + e.length], e.prompt_ids + e.answer_ids)
        np.testing.assert_array_equal(b.positions[r, s : s + e.length], np.arange(e.length))
        assert (b.segment_ids[r, s : s + e.length] == k + 1).all()
        assert (b.prompt_len[k], b.length[k]) == (len(e.prompt_ids), e.length)
        # the row's mixed block holds this example's first P - 1 slots, each found in the bidirectional stream
        assert set(range(s, s + len(e.prompt_ids) - 1)) <= set(b.prompt_slots[r].tolist())
    mixed = b.prompt_slots >= 0
    rows = np.broadcast_to(np.arange(len(b.tokens))[:, None], mixed.shape)
    np.testing.assert_array_equal(
        b.bidir_source.reshape(-1)[b.bidir_index[mixed]], rows[mixed] * b.tokens.shape[1] + b.prompt_slots[mixed]
    )
    assert ((b.bidir_index >= 0) == mixed).all()
    stream = b.bidir_source[b.bidir_source >= 0]  # every example's P - 1 prompt tokens once, nothing else
    assert len(stream) == len(set(stream.tolist())) == sum(len(e.prompt_ids) - 1 for e in ex)
    real = b.segment_ids > 0
    assert ((b.positions >= 0) == real).all() and (b.tokens[~real] == 0).all()
    assert (b.segment_ids.max() <= len(ids)) and b.tokens.shape[1] <= 24
    assert padding_fraction(b) == pytest.approx(1 - sum(e.length for e in ex) / b.tokens.size)


def test_answer_tokens_list_every_answer_token_once():
    ex = examples([(3, 4), (2, 5), (4, 2)])
    b = pack(ex, np.arange(3), 32, pad_id=0, multiple=8, row_multiple=2)
    row, slot, targets, example = (np.asarray(x) for x in b.answer_tokens())
    assert len(row) == 16  # 11 answer tokens, rounded to multiple x row_multiple
    assert (example[11:] == -1).all()
    for k, e in enumerate(ex):
        mine = example == k
        np.testing.assert_array_equal(targets[mine], e.answer_ids)
        assert slot[mine][0] == b.start[k] + len(e.prompt_ids) - 1  # the last prompt token predicts the first answer
        assert (row[mine] == b.row[k]).all()


@pytest.mark.parametrize("method", ["first_fit", "best_fit"])
def test_an_epoch_packed_trains_on_the_examples_of_the_epoch_unpacked(method):
    rng = np.random.RandomState(2)
    ex = examples([(int(p), int(a)) for p, a in zip(rng.randint(1, 40, 37), rng.randint(1, 60, 37))])
    plain = EpochBatches(ex, 10, seed=3, pad_id=0, multiple=16, max_width=128)
    packed = EpochBatches(ex, 10, seed=3, pad_id=0, multiple=16, max_width=128, packing=method, row_multiple=2)
    for epoch in range(2):
        slots = rows = 0
        for index in range(plain.batches_per_epoch):
            a, b = plain.batch(epoch, index), packed.batch(epoch, index)
            np.testing.assert_array_equal(b.example_id[: len(a.example_id)], a.example_id)
            assert (b.example_id[len(a.example_id) :] == -1).all()
            slots, rows = slots + a.tokens.size, rows + b.tokens.size
        assert rows < slots  # packed: fewer token slots than one example a row


def test_packing_needs_a_row_length_and_a_global_batch():
    ex = examples([(2, 3)] * 4)
    with pytest.raises(ValueError, match="packing needs max_width"):
        EpochBatches(ex, 2, seed=0, pad_id=0, packing="first_fit")
    with pytest.raises(ValueError, match="packing must be one of"):
        EpochBatches(ex, 2, seed=0, pad_id=0, max_width=8, packing="tight")
    packed = EpochBatches(ex, 2, seed=0, pad_id=0, max_width=16, packing="first_fit")
    with pytest.raises(ValueError, match="packed batches are global"):
        packed.batch(0, 0, process_index=0, process_count=2)
