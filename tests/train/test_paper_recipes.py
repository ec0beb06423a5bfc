"""The shipped recipes train what the papers' code trains: the Bitune update budget is spent over as many epochs as
it takes, and the repetition run reads the authors' split as it stands, walks their example order and logs it."""

import json
import pathlib

import numpy as np
import pytest

from bitune_jax.train.loop import run
from bitune_jax.train.setup import plan
from bitune_jax.train.spec import RunSpec
from experiments.configs import bitune_downstream, gemma2b_bitune, smollm2_bitune
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model


def test_shipped_bitune_configs_spend_the_update_budget_over_up_to_100_epochs():
    """The authors' instruct.sh runs until 3,000 updates of 10 examples (max_epochs=100); downstream.sh until 747.
    A pool of N examples gives ceil(N / 10) updates per epoch: the budget is reached when N x 100 / 10 >= it."""
    for config, budget in (
        (smollm2_bitune.get_config(), 3_000),
        (gemma2b_bitune.get_config("1gpu"), 3_000),
        (bitune_downstream.get_config("gsm8k"), 747),
    ):
        assert (config.train.epochs, config.train.max_updates, config.data.batch_size) == (100, budget, 10)
        assert config.seed == 42 and config.train.warmup_frac == 0.1
        train = RunSpec.from_config(config).train
        for n in (budget * 10 // 100, budget * 10 // 100 + 7, 30_000, 7_473):
            assert plan(train, -(-n // 10)) == (budget, budget), n
        n_short = budget * 10 // 100 - 10  # too few examples for the budget in 100 epochs: the epochs end it
        assert plan(train, -(-n_short // 10))[1] == 100 * -(-n_short // 10) < budget
    assert [p["seed"] for p in smollm2_bitune.get_sweep()] == [42, 43, 44, 42, 43, 44]
    assert {p["objective"] for p in smollm2_bitune.get_sweep()} == {"peft", "bitune"}
    assert bitune_downstream.get_config("arc").train.lr == 1e-3
    with pytest.raises(ValueError, match="unknown downstream task"):
        bitune_downstream.get_config("mmlu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def _pool(path: pathlib.Path, n: int) -> pathlib.Path:
    rows = [{"prompt": f"What is {i} plus {i % 7}?", "response": f"It is {i + i % 7}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.integration
def test_bitune_recipe_crosses_epochs_until_the_budget_is_spent(model_dir, tmp_path):
    """The shipped smollm2_bitune.py (epochs 100, 10 examples an update) on 35 examples, with the budget cut from
    3,000 to 17 updates so it runs in seconds: 4 updates an epoch, so the run ends inside epoch 5 at update 17.
    (The full budget, measured: 310 examples, 3,000 updates over 97 epochs.)"""
    c = smollm2_bitune.get_config()
    c.model.name, c.workdir = str(model_dir), str(tmp_path / "run")
    c.data.source, c.data.train_path = "jsonl", str(_pool(tmp_path / "pool.jsonl", 35))
    c.data.max_len, c.data.pad_multiple = 64, 32
    c.train.max_updates = 17
    c.checkpoint.every_steps, c.log.tensorboard = 0, False
    summary = run(c)
    assert summary["updates"] == 17 and summary["planned_updates"] == 17 and summary["epochs"] == 5
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [r["example_rows"] for r in rows if r["scope"] == "step"]
    assert [len(t) for t in trained] == [10, 10, 10, 5] * 4 + [10]  # the last batch of an epoch holds 35 mod 10
    for epoch in range(4):
        assert sorted(sum(trained[4 * epoch : 4 * epoch + 4], [])) == list(range(35))


@pytest.mark.integration
def test_authors_split_and_order_are_read_as_they_stand_and_logged(model_dir, tmp_path):
    """`data.pool_order=file` takes validation = the first val_size rows and the training set = the next
    num_samples (the split prepare_dolci writes); `data.order=authors` walks the chain of `datasets` shuffles
    (seed + epoch); every step's training rows land in metrics.jsonl."""
    datasets = pytest.importorskip("datasets")
    pool = _pool(tmp_path / "pool.jsonl", 40)
    overrides = {
        "seed": 42,
        "data.source": "jsonl",
        "data.train_path": str(pool),
        "data.pool_order": "file",
        "data.order": "authors",
        "data.val_size": 6,
        "data.num_samples": 9,
        "data.pad_multiple": 32,
        "train.epochs": 3,
        "saturation.enabled": False,
        "checkpoint.every_steps": 0,
    }
    summary = run(tiny_config(model_dir, tmp_path, **overrides))
    assert summary["updates"] == 27
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["example_rows"][0] for r in rows if r["scope"] == "step"]
    # the authors: train_9 = rows 6..14 of the split order, then dataset.shuffle(seed=42 + epoch) each epoch
    lines = pool.read_text().splitlines()
    ds = datasets.Dataset.from_dict({"row": list(range(9)), "text": lines[6:15]})
    expected = []
    for epoch in range(3):
        ds = ds.shuffle(seed=42 + epoch)
        expected += ds["row"]
    assert logged == expected
    assert np.isfinite(summary["history"][-1]["val_loss"])  # the 6 validation rows were scored


def test_sweep_prints_the_papers_grid_on_the_authors_split(capsys):
    """`python -m experiments.sweep experiments/configs/olmo7b_rep.py:h100x8`: a header naming the split file it
    reads as it stands (prepare_dolci's pool.jsonl) and the authors' example order, then the 9 fixed-budget runs."""
    from experiments import sweep

    sweep.main(["experiments/configs/olmo7b_rep.py:h100x8"])
    header, *commands = capsys.readouterr().out.splitlines()
    assert header == "# data: data/dolci_think/pool.jsonl (pool_order=file, order=authors, val_size=1000)"
    grid = [(int(c.split("num_samples=")[1].split()[0]), int(c.split("epochs=")[1].split()[0])) for c in commands]
    assert grid == [(200 * 2**i, 256 // 2**i) for i in range(9)]
    sweep.main(["experiments/configs/gemma2b_bitune.py:1gpu"])
    header, *commands = capsys.readouterr().out.splitlines()
    assert header.startswith("# data: data/bitune/ultrafeedback/train.jsonl") and len(commands) == 6
    assert all("--config.seed=4" in c for c in commands)


def test_sweep_refuses_a_flag_its_points_would_override(capsys):
    """An extra --config.train.epochs would come before each point's own and lose silently: refused, named."""
    from experiments import sweep

    with pytest.raises(SystemExit, match=r"--config.train.epochs: the sweep's points set these keys themselves"):
        sweep.main(["experiments/configs/olmo7b_rep.py:h100x8", "--config.train.epochs=3"])
    sweep.main(["experiments/configs/olmo7b_rep.py:h100x8", "--config.train.lr=1e-6"])  # not a point's key
    assert all("--config.train.lr=1e-6" in c for c in capsys.readouterr().out.splitlines()[1:])
