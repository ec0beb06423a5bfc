"""The functions each steps task binds to `StepsTask`: its default step range and its records' sources."""

import pytest

from bitune_jax.tasks import arithmetic, list_edits


@pytest.mark.parametrize(
    "module, steps, stream, split_name",
    [(arithmetic, (4, 8), "synthetic arith", "synthetic"), (list_edits, (8, 12), "list_edits", "list_edits")],
)
def test_defaults_and_sources(module, steps, stream, split_name):
    records = module.generate(40, seed=3)
    assert {r.meta["steps"] for r in records} <= set(range(steps[0], steps[1] + 1))
    assert {r.file for r in records} == {f"<{stream} seed=3>"}
    assert records == module.generate(40, seed=3, min_steps=steps[0], max_steps=steps[1], cot=True)

    train, test = module.train_test_split(20, 10, seed=4)
    assert {r.file for r in train} == {f"<{split_name} train seed=4>"}
    assert {r.file for r in test} == {f"<{split_name} test seed=4>"}
    assert {r.meta["steps"] for r in train + test} <= set(range(steps[0], steps[1] + 1))
    # test steps follow the training range unless set
    _, longer = module.train_test_split(5, 10, seed=4, min_steps=2, max_steps=3, test_min_steps=5, test_max_steps=5)
    assert {r.meta["steps"] for r in longer} == {5}
    short_train, short_test = module.train_test_split(10, 10, seed=4, min_steps=2, max_steps=3)
    assert {r.meta["steps"] for r in short_train + short_test} <= {2, 3}
    answer_only = module.generate(3, seed=3, cot=False)
    assert all("<think>" not in r.response for r in answer_only)
