"""The study runner on a tiny model: grid points run once, resume, and become a table and a figure."""

import pytest

from bitune_jax.train import saturation
from bitune_jax.train.loop import run
from experiments.study import load_config_module, point_config, run_points
from experiments.study_repetition import markdown_table, plot, point_row, saturation_epoch
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT_CONFIGS = "experiments/configs"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def test_grid_runs_once_resumes_and_reports(model_dir, tmp_path):
    config = tiny_config(
        model_dir,
        tmp_path / "study",
        **{
            "train.max_updates": 4,
            "saturation.enabled": False,
            "checkpoint.every_steps": 0,
            "eval.at_start": True,
            "eval.num_items": 2,
            "eval.max_new_tokens": 8,
            "data.synthetic.pool_size": 16,
        },
    )
    sweep = [
        {
            "data.num_samples": n,
            "train.epochs": e,
            "eval.every_epochs": max(1, e // 2),
            "workdir": str(tmp_path / "study" / f"{n}x{e}"),
        }
        for n, e in [(4, 1), (2, 2)]
    ]
    calls = []
    counting = lambda c: (calls.append(c.workdir), run(c))[1]

    summaries = run_points(config, sweep, runner=counting)
    assert len(calls) == 2 and [s["steps"] for s in summaries] == [4, 4]
    assert run_points(config, sweep, runner=counting) == summaries and len(calls) == 2  # done points are kept
    sweep[1]["eval.max_new_tokens"] = 6  # a changed setting reruns that point only
    run_points(config, sweep, runner=counting)
    assert calls[2:] == [sweep[1]["workdir"]]

    rule = saturation.SaturationConfig()
    rows = [point_row(s, rule) for s in summaries]
    assert [(r["samples"], r["epochs"], r["updates"]) for r in rows] == [(4, 1, 4), (2, 2, 4)]
    assert rows[1]["curve_updates"] == [0, 2, 4] and len(rows[1]["curve_held_out"]) == 3
    assert rows[1]["held_out_start"] == rows[0]["held_out_start"]  # the same model before training
    table = markdown_table(rows, items=2)
    assert "| 2 x 2 | 4 |" in table and table.count("\n| ") == 3
    assert plot(rows, tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_saturation_epoch_replays_the_rule():
    rule = saturation.SaturationConfig(threshold=0.9, window=0)
    assert saturation_epoch([0.5, 0.8, 0.95, 0.99], rule) == 3
    assert saturation_epoch([0.5, 0.6], rule) is None


def test_study_configs_and_bad_sweep_key():
    for name in ("study_repetition_smollm2", "study_bitune_smollm2"):
        module = load_config_module(f"{ROOT_CONFIGS}/{name}.py")
        config = module.get_config()
        for point in module.get_sweep():
            point_config(config, point)  # every override names a real key
    with pytest.raises(KeyError, match="trian.epochs"):
        point_config(config, {"trian.epochs": 3})


def test_olmo7b_rep_triangle_is_the_authors_grid():
    """scripts/train_dolci.sh of the authors: epochs 256 .. 1, and at each every size 200 .. within 51,200 updates."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("olmo", "experiments/configs/olmo7b_rep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    triangle = [(p["data.num_samples"], p["train.epochs"]) for p in module.get_sweep("triangle")]
    assert len(triangle) == 45 and triangle[:4] == [(200, 256), (200, 128), (400, 128), (200, 64)]
    assert triangle[-1] == (51_200, 1) and all(n * e <= 51_200 for n, e in triangle)
    diagonal = [(p["data.num_samples"], p["train.epochs"]) for p in module.get_sweep()]
    assert set(diagonal) <= set(triangle) and all(n * e == 51_200 for n, e in diagonal)
