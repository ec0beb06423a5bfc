"""The study runner on a tiny model: grid points run once, resume, and become a table and a figure."""

import json
import pathlib
import shutil
import types

import numpy as np
import pytest

from bitune_jax.tasks import list_edits
from bitune_jax.train import saturation
from bitune_jax.train.loop import run
from experiments import repetition_v3
from experiments.study import load_config_module, point_config, point_name, run_points, select_points
from experiments.study_repetition import (
    _ensure_warmup,
    comparisons,
    fixed_n_judgement,
    markdown_tables,
    plot,
    point_row,
    saturation_epoch,
    trace_eval_items,
)
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT_CONFIGS = "experiments/configs"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def test_grid_runs_once_resumes_from_records_and_reports(model_dir, tmp_path):
    """A list-edits grid (fixed budget of 4 updates, plus a fixed-n row of 1 sample): every point runs once, its
    record holds the per-item eval, a clean checkout (records, no workdirs) reruns nothing, and the report pairs
    the points item by item."""
    config = tiny_config(
        model_dir,
        tmp_path / "study",
        **{
            "saturation.enabled": False,
            "checkpoint.every_steps": 0,
            "eval.num_items": 3,
            "eval.max_new_tokens": 8,
            "data.synthetic.task": "list_edits",
            "data.synthetic.pool_size": 8,
            "data.synthetic.test_size": 3,
        },
    )
    grid = [(4, 1), (2, 2), (1, 4), (1, 1), (1, 2), (1, 8)]  # 1 x 8 spends more than the budget of 4
    sweep = [
        {
            "data.num_samples": n,
            "train.epochs": e,
            "train.max_updates": n * e,
            "eval.every_epochs": e,
            "workdir": str(tmp_path / "study" / f"{n}x{e}"),
        }
        for n, e in grid
    ]
    records = tmp_path / "report" / "points"
    calls = []
    counting = lambda c: (calls.append(c.workdir), run(c))[1]

    summaries = run_points(config, sweep, runner=counting, record_dir=records, evaluate=trace_eval_items)
    assert len(calls) == 6 and [s["steps"] for s in summaries] == [4, 4, 4, 1, 2, 8]
    assert sorted(p.name for p in records.iterdir()) == sorted(f"{n}x{e}.json" for n, e in grid)
    items = summaries[0]["final_eval_items"]
    assert len(items["correct"]) == 3 and sorted(items["index"]) == [0, 1, 2] and items["epoch"] == 1
    assert len(items["lengths"][0]) == 1  # greedy: one sample per item
    assert all(0 <= k <= n for k, n in zip(items["steps_right"], items["steps_total"], strict=True))
    assert items["steps_total"] == [r.meta["steps"] for r in list_edits.split(config.data.synthetic)[1][:3]]
    # v3's greedy pass over a finished point's final weights: this grid's own eval is greedy, so they agree.
    first = point_config(config, sweep[0])
    greedy = repetition_v3.with_greedy(first, first.workdir, items)
    assert greedy["greedy_correct"] == [int(c[0]) for c in items["correct"]]
    assert greedy["greedy_steps_right"] == items["steps_right"] and greedy["index"] == items["index"]

    shutil.rmtree(tmp_path / "study")  # a clean checkout: the committed records, no run directories
    assert run_points(config, sweep, runner=counting, record_dir=records) == summaries and len(calls) == 6
    extra = {**sweep[0], "train.lr": 1e-3, "workdir": str(tmp_path / "study" / "4x1_lr1e-3")}
    partial = run_points(config, [*sweep, extra], runner=counting, record_dir=records, run_missing=False)
    assert partial == summaries and len(calls) == 6  # a report of a study under way runs nothing
    sweep[1]["eval.max_new_tokens"] = 6  # a changed setting reruns that point only
    run_points(config, sweep, runner=counting, record_dir=records)
    assert calls[6:] == [sweep[1]["workdir"]]
    # A point cut off (killed with its session) keeps its workdir and the trainer resumes it; a point whose
    # trajectory-changing settings differ from its workdir's run starts over.
    cut = pathlib.Path(sweep[1]["workdir"])
    for path in (cut / "summary.json", records / f"{cut.name}.json"):
        path.unlink()
    (cut / "kept").write_text("")
    run_points(config, sweep, runner=counting, record_dir=records)
    assert calls[7:] == [str(cut)] and (cut / "kept").exists()
    for path in (cut / "summary.json", records / f"{cut.name}.json"):
        path.unlink()
    sweep[1]["train.lr"] = 2e-3
    run_points(config, sweep, runner=counting, record_dir=records)
    assert calls[8:] == [str(cut)] and not (cut / "kept").exists()

    rule = saturation.SaturationConfig()
    rows = [point_row(s, rule) for s in summaries]
    assert [(r["name"], r["updates"]) for r in rows] == [(f"{n}x{e}", n * e) for n, e in grid]
    for r in rows:
        assert len(r["token_accuracy"]) == len(r["sample_token_accuracy"]) == r["epochs"]
        assert 0 <= r["held_out_final"] <= 1 and r["held_out_items"] == 3 and 0 <= r["steps_right_fraction"] <= 1
    comp = comparisons(summaries, rows)
    assert [(x["point"], x["against"]) for x in comp["fixed_budget"]] == [("2x2", "4x1"), ("1x4", "4x1")]
    assert [(x["point"], x["against"]) for x in comp["fixed_n"]] == [("1x2", "1x1"), ("1x4", "1x2"), ("1x8", "1x4")]
    assert comp["best_repetition"]["point"] in ("2x2", "1x4")
    judged = comp["fixed_n_judgement"]["by_metric"]
    assert set(judged) == {"token_accuracy", "sample_token_accuracy"}
    for j in judged.values():  # a saturated point is judged on both outcomes, against every longer point
        if j["saturated_point"] is not None:
            assert set(j["by_outcome"]) == {"held-out accuracy", "steps right"}
            later = [r["name"] for r in rows if r["samples"] == 1 and r["epochs"] > int(j["saturated_point"][2:])]
            assert all([x["point"] for x in o["later"]] == later for o in j["by_outcome"].values())
    table = markdown_tables(rows, comp, lr_rows=rows[:1])
    assert "| 2 x 2 | 4 |" in table and "fixed n: 1x4 - 1x2" in table and "Learning-rate pick" in table
    assert plot(rows, tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_a_retrained_warmup_of_the_same_recipe_keeps_the_records(model_dir, tmp_path):
    """Records name a warm-up model by its recipe: retrained elsewhere (other low bits, same recipe) it reruns
    nothing; a changed recipe is another starting point."""
    from bitune_jax.train.run_record import RECIPE_NAME, weights_identity

    warm = tmp_path / "warm" / "model"
    shutil.copytree(model_dir, warm)
    (warm / RECIPE_NAME).write_text(json.dumps({"config": {"train.lr": 1e-4}, "data": {"sha256": "ab"}}))
    config = tiny_config(warm, tmp_path / "study", **{"saturation.enabled": False, "checkpoint.every_steps": 0})
    sweep = [{"data.num_samples": 1, "train.epochs": 1, "workdir": str(tmp_path / "study" / "1x1")}]
    records = tmp_path / "points"
    done = run_points(config, sweep, record_dir=records, evaluate=lambda *_: None)
    assert done[0]["inputs"]["weights"].startswith("recipe:")

    shutil.rmtree(tmp_path / "study")
    weights = next(warm.glob("*.safetensors"))
    before = weights_identity(str(warm))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # a retrained copy: the last weight's low bits differ
    weights.write_bytes(bytes(data))
    assert weights_identity(str(warm)) != before
    fail = lambda *_: pytest.fail("reran a point recorded from the same recipe")
    assert run_points(config, sweep, runner=fail, record_dir=records, evaluate=fail) == done

    (warm / RECIPE_NAME).write_text(json.dumps({"config": {"train.lr": 3e-4}, "data": {"sha256": "ab"}}))
    assert run_points(config, sweep, record_dir=records, run_missing=False) == []


def test_warmup_results_are_copied_into_the_report(tmp_path):
    """A study whose warm-up model exists does not retrain it; its gate figures go into the report folder."""
    warm = tmp_path / "warm"
    (warm / "model").mkdir(parents=True)
    (warm / "model" / "config.json").write_text("{}")
    (warm / "results.json").write_text(json.dumps({"headline": {"gate_met": True}, "gate": 0.9, "config": {}}))
    _ensure_warmup(types.SimpleNamespace(WARMUP=str(warm)), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "warmup.json").read_text()) == {"headline": {"gate_met": True}, "gate": 0.9}


def test_fixed_n_judgement_asks_each_outcome_past_the_saturated_point():
    rows = [
        {"name": f"16x{e}", "token_accuracy_final": acc, "sample_token_accuracy_final": acc}
        for e, acc in ((4, 0.95), (8, 0.995), (16, 1.0))
    ]
    flat = {"16x4": np.zeros(200), "16x8": np.zeros(200), "16x16": np.zeros(200)}
    rising = {"16x4": np.full(200, 0.1), "16x8": np.full(200, 0.2), "16x16": np.full(200, 0.4)}
    judged = fixed_n_judgement(rows, {"held-out accuracy": flat, "steps right": rising})["by_metric"]
    for j in judged.values():
        assert j["saturated_point"] == "16x8"
        assert [x["point"] for x in j["by_outcome"]["steps right"]["later"]] == ["16x16"]
        assert j["by_outcome"]["steps right"]["verdict"] == "still improves"
        assert j["by_outcome"]["held-out accuracy"]["verdict"] == "no resolved change"
    none = fixed_n_judgement(rows[:2], {"steps right": rising})["by_metric"]["token_accuracy"]
    assert none["by_outcome"]["steps right"]["verdict"] == "no longer point in the row"


def test_saturation_epoch_replays_the_rule():
    rule = saturation.SaturationConfig(threshold=0.9, window=0)
    assert saturation_epoch([0.5, 0.8, 0.95, 0.99], rule) == 3
    assert saturation_epoch([0.5, 0.6], rule) is None


def test_study_configs_and_bad_sweep_key():
    for name in ("study_repetition_smollm2", "study_repetition_v2_smollm2", "study_bitune_v2_smollm2"):
        module = load_config_module(f"{ROOT_CONFIGS}/{name}.py")
        config = module.get_config()
        points = module.get_sweep() + getattr(module, "get_lr_sweep", list)()
        for point in points:
            point_config(config, point)  # every override names a real key
        by_name = {}
        for point in points:  # a shared name is a shared record (the LR pick's point is a grid point): same settings
            assert by_name.setdefault(point_name(point), point) == point, f"{name}: {point_name(point)} differs"
    with pytest.raises(KeyError, match="trian.epochs"):
        point_config(config, {"trian.epochs": 3})


def test_only_selects_named_points_in_order_and_names_unknown_ones():
    sweep = [{"workdir": f"runs/s/{n}", "train.epochs": i} for i, n in enumerate(["a", "b", "c"])]
    assert [p["train.epochs"] for p in select_points(sweep, ["c", "a"])] == [2, 0]
    with pytest.raises(ValueError, match=r"\['zz'\].*\['a', 'b', 'c'\]"):
        select_points(sweep, ["a", "zz"])


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
