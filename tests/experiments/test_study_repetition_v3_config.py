"""Repetition v3's grid as pre-registered: no grid point before the learning rate is picked; the pick runs 512 x 1
and 32 x 16 on draw 0 at each rate; then the diagonal at one budget and the saturation row, on both draws."""

import importlib


def test_the_grid_waits_for_the_pick_then_covers_both_draws_at_one_budget(monkeypatch):
    m = importlib.import_module("experiments.configs.study_repetition_v3_smollm2")
    assert m.LR in m.LR_CHOICES and m.EDITS[0] == (3, 5)  # as shipped: a picked rate, the pick's difficulty first
    monkeypatch.setattr(m, "LR", None)
    monkeypatch.setattr(m, "EDITS", [(3, 5)])
    assert m.get_sweep() == []
    pick = m.get_lr_sweep()
    assert {(p["data.num_samples"], p["train.epochs"], p["train.lr"]) for p in pick} == {
        (n, e, lr) for lr in m.LR_CHOICES for n, e in ((512, 1), (32, 16))
    }
    assert {p["data.pool_seed"] for p in pick} == {0}
    monkeypatch.setattr(m, "LR", 1e-4)
    grid = m.get_sweep()
    assert len({p["workdir"] for p in grid}) == len(grid) == 12
    assert {p["data.pool_seed"] for p in grid} == {0, 1} and {p["train.lr"] for p in grid} == {1e-4}
    diagonal = [p for p in grid if (p["data.num_samples"], p["train.epochs"]) in m.DIAGONAL]
    assert {p["train.max_updates"] for p in diagonal} == {512}
    assert {p["workdir"] for p in pick} & {p["workdir"] for p in grid} == {
        "runs/study_repetition_v3/512x1_lr0.0001_draw0",
        "runs/study_repetition_v3/32x16_lr0.0001_draw0",
    }  # the picked rate's two points are the grid's own, run once
    assert [p["workdir"] for p in m.get_pilot()] == ["runs/study_repetition_v3/512x1_lr0.0001_draw0"]
    # A change of difficulty (PREREGISTRATION.md, Changes): the gate's tries at each, the grid at the last, named
    # apart so that no record of another difficulty is taken for its own.
    monkeypatch.setattr(m, "EDITS", [(3, 5), (5, 8)])
    assert [p["workdir"] for p in m.get_pilot()] == [
        "runs/study_repetition_v3/512x1_lr0.0001_draw0",
        "runs/study_repetition_v3/512x1_lr0.0001_draw0_edits5-8",
    ]
    harder = m.get_sweep()
    assert {(p["data.synthetic.min_steps"], p["data.synthetic.max_steps"]) for p in harder} == {(5, 8)}
    assert {p["workdir"] + "_edits5-8" for p in grid} == {p["workdir"] for p in harder}
    assert {(p["data.synthetic.min_steps"], p["data.synthetic.max_steps"]) for p in m.get_lr_sweep()} == {(3, 5)}
    monkeypatch.setattr(m, "EDITS", [(3, 5), (6, 9)])
    grid_6_9 = m.get_sweep()
    assert {p["data.max_len"] for p in grid_6_9} == {512}  # the longest 6-9 traces (484 tokens) all fit
    assert {p["data.truncation"] for p in grid_6_9} == {"error"}  # one that did not would stop, not drop an update
    assert "data.max_len" not in m.get_lr_sweep()[0]  # the recorded points keep the config's 448
    c = m.get_config()
    assert (c.eval.n, c.eval.temperature, c.eval.top_p, c.eval.num_items) == (4, 0.6, 0.95, 128)
    assert (c.data.synthetic.min_steps, c.data.synthetic.max_steps, c.data.synthetic.pool_size) == (3, 5, 512)
