"""The v3 repetition report on made-up records: the rate pick, the pilot gate, the rule's pick and the pooled
primary decision, as PREREGISTRATION.md writes them."""

import numpy as np
import pytest

from bitune_jax.train import saturation
from experiments import repetition_v3 as v3

RULE = saturation.SaturationConfig()
ITEMS = 40


def record(samples, epochs, lr, draw, p_right, token_accuracy=None, greedy=True, seed=0):
    """A point's record: 4 samples per problem, right with probability `p_right` (a fixed draw per seed)."""
    rng = np.random.default_rng(seed)
    correct = (rng.random((ITEMS, 4)) < p_right).astype(int).tolist()
    curve = token_accuracy or [0.5] * epochs
    items = {
        "index": list(range(ITEMS))[::-1],  # out of order: the report sorts by problem
        "correct": correct[::-1],
        "terminated": [[1, 1, 0, 1]] * ITEMS,
        "steps_right": [2] * ITEMS,
        "steps_total": [4] * ITEMS,
    }
    if greedy:
        items["greedy_correct"] = [c[0] for c in correct[::-1]]
    updates = samples * epochs
    point = {"data.num_samples": samples, "train.epochs": epochs, "train.lr": lr, "data.pool_seed": draw}
    return {
        "point": point,
        "config": {"workdir": f"runs/x/{samples}x{epochs}_lr{lr:g}_draw{draw}", "train": {"max_updates": updates}},
        "updates": updates,
        "history": [{m: a for m in saturation.METRICS} for a in curve],
        "final_eval_items": items,
    }


def test_item_outcomes_follow_the_problem_order():
    r = record(512, 1, 1e-4, 0, 0.5)
    o = v3.item_outcomes(r)
    correct = np.asarray(r["final_eval_items"]["correct"][::-1], float)
    np.testing.assert_allclose(o["avg@4"], correct.mean(1))
    np.testing.assert_allclose(o["pass@4"], correct.max(1))
    np.testing.assert_allclose(o["greedy"], correct[:, 0])
    assert o["terminated"].tolist() == [0.75] * ITEMS and o["steps_right"].tolist() == [0.5] * ITEMS
    assert "greedy" not in v3.item_outcomes(record(512, 1, 1e-4, 0, 0.5, greedy=False))


def test_the_rate_pick_is_the_best_mean_of_both_points_and_waits_for_them():
    lrs = [record(512, 1, 3e-5, 0, 0.2), record(32, 16, 3e-5, 0, 0.2, seed=1)]
    lrs += [record(512, 1, 1e-4, 0, 0.6, seed=2), record(32, 16, 1e-4, 0, 0.2, seed=3)]
    lrs += [record(512, 1, 3e-4, 0, 0.9, seed=4)]  # its 32 x 16 not recorded yet
    got = v3.lr_pick(lrs, (3e-5, 1e-4, 3e-4), (512, 1), (32, 16))
    assert got["pick"] is None  # 3e-4 could still win: no pick before every rate has both points
    assert set(got["by_lr"]) == {"3e-05", "0.0001", "0.0003"} and "mean" not in got["by_lr"]["0.0003"]
    assert v3.lr_pick(lrs, (3e-5, 1e-4), (512, 1), (32, 16))["pick"] == 1e-4
    same = [record(512, 1, lr, 0, 0.5) for lr in (3e-4, 1e-4)] + [record(32, 16, lr, 0, 0.5) for lr in (3e-4, 1e-4)]
    assert v3.lr_pick(same, (1e-4, 3e-4), (512, 1), (32, 16))["pick"] == 1e-4  # a tie goes to the lower rate
    assert v3.lr_pick([], (1e-4,), (512, 1), (32, 16))["pick"] is None


@pytest.mark.parametrize(
    "p_right, token_accuracy, holds",
    [(0.4, 0.8, True), (0.4, 0.95, True), (0.05, 0.8, False), (0.4, 0.99, False), (0.4, 1.0, False), (0.9, 0.5, False)],
)
def test_the_pilot_gate(p_right, token_accuracy, holds):
    """avg@4 in [0.2, 0.6] and the epoch's token accuracy below the rule's threshold (0.99; <= 0.9 until the change
    of 2026-12-07: a one-epoch point at 0.95 now passes)."""
    gate = v3.pilot_gate(record(512, 1, 1e-4, 0, p_right, token_accuracy=[token_accuracy]), RULE)
    assert gate["holds"] is holds and gate[RULE.metric] == token_accuracy


def test_the_rule_picks_the_first_row_point_at_or_after_it_fires():
    rising = [0.5, 0.7, 0.9, 0.95, 0.992] + [0.995] * 11  # the threshold at epoch 5
    assert v3.rule_pick(rising, RULE) == {"fired_at_epoch": 5, "epochs": 8}
    assert v3.rule_pick([0.995] * 16, RULE)["epochs"] == 4  # fires at once: the shortest point
    never = list(np.linspace(0.5, 0.9, 16))  # steady gains, below the threshold
    assert v3.rule_pick(never, RULE) == {"fired_at_epoch": None, "epochs": 16}


def test_primary_pools_the_draws_and_applies_the_decision_rule():
    rising = [0.5, 0.7, 0.9, 0.95, 0.992] + [0.995] * 11  # the rule picks 32 x 8 on both draws
    lr = 1e-4
    recs = []
    for draw in (0, 1):
        recs += [
            record(512, 1, lr, draw, 0.3, token_accuracy=[0.6], seed=10 + draw),
            record(32, 8, lr, draw, 0.3, seed=10 + draw),  # the same draws of correctness as 512 x 1 ...
            record(32, 16, lr, draw, 0.3, token_accuracy=rising, seed=20 + draw),
            record(64, 8, lr, draw, 0.3, seed=30 + draw, greedy=False),
            record(128, 4, 3e-4, draw, 0.9),  # another rate: ignored
        ]
    for r in recs[1::5]:  # ... with the first sample always right: a resolved gain
        r["final_eval_items"]["correct"] = [[1, *c[1:]] for c in r["final_eval_items"]["correct"]]
    result = v3.report(recs, lr, RULE, (512, 1), 32)
    p = result["primary"]
    assert p["picks"] == {"0": {"fired_at_epoch": 5, "epochs": 8}, "1": {"fired_at_epoch": 5, "epochs": 8}}
    assert p["items"] == 2 * ITEMS and p["draws"] == 2 and p["decision"] == "reproduced" and p["low"] > 0
    assert result["pilot_gate"]["holds"] is True  # avg@4 near 0.3, token accuracy 0.6
    secondary = {(s["point"], s["outcome"]) for s in result["secondary"]}
    assert (
        ("64x8", "greedy") not in secondary and ("64x8", "avg@4") in secondary and ("32x16", "steps_right") in secondary
    )
    assert not any(s["point"] == "128x4" for s in result["secondary"])
    assert all(set(s["per_draw"]) == {"0", "1"} for s in result["secondary"])
    text = v3.markdown(v3.lr_pick([], (1e-4,), (512, 1), (32, 16)), result, (512, 1))
    assert (
        "**reproduced**" in text and "draw 0: fires at epoch 5, picks 8 epochs" in text and "| 64x8 | avg@4 |" in text
    )
    assert v3.decision({"low": -0.1, "high": 0.2}) == "unresolved" and v3.decision({"low": -0.3, "high": -0.1}) == (
        "not reproduced"
    )
    assert p["pending_draws"] == [] and "Provisional" not in text
    step, steps_right = result["saturation_row"]  # 32 x 8 has every first sample right, 32 x 16 not: more epochs lose
    assert step["step"] == "32x16 - 32x8" and step["outcome"] == "avg@4" and step["draws"] == 2 and step["high"] < 0
    assert steps_right["outcome"] == "steps_right" and steps_right["estimate"] == 0  # both at 2 of 4 steps
    assert "| 32x16 - 32x8 | avg@4 | " in text and "Exploratory (not pre-registered)" in text
    one_draw = v3.report([r for r in recs if r["point"]["data.pool_seed"] == 0], lr, RULE, (512, 1), 32, None, (0, 1))
    assert one_draw["primary"]["pending_draws"] == [1] and one_draw["primary"]["items"] == ITEMS
    text = v3.markdown(v3.lr_pick([], (1e-4,), (512, 1), (32, 16)), one_draw, (512, 1))
    assert "Provisional: draw 1 not recorded yet" in text
    table = v3.points_table(recs, RULE)
    assert "| 512x1_lr0.0001_draw0 |" in table and table.count("\n") == len(recs) + 1


def test_primary_waits_for_the_row():
    result = v3.report([record(512, 1, 1e-4, 0, 0.3)], 1e-4, RULE, (512, 1), 32)
    assert result["primary"] is None and result["pilot_gate"] is not None
    assert "Pending" in v3.markdown({"by_lr": {}, "pick": None}, result, (512, 1))


def test_a_point_that_ran_short_voids_the_report():
    """A record with fewer updates than its config's budget (examples dropped by truncation) is named, not compared."""
    short = record(512, 1, 1e-4, 0, 0.3)
    short["updates"] = 507
    with pytest.raises(ValueError, match=r"512x1_lr0.0001_draw0: 507 of 512 updates"):
        v3.report([short, record(32, 16, 1e-4, 0, 0.3)], 1e-4, RULE, (512, 1), 32)


def test_the_figure_draws_both_draws_of_the_grid_and_the_row(tmp_path):
    """Per draw: avg@4 along the fixed budget and along the 32-sample row (only the grid's rate and difficulty), the
    row's token accuracy, and the epoch the rule fires at."""
    rising = [0.5, 0.7, 0.9, 0.95, 0.992] + [0.995] * 11
    recs = []
    for draw in (0, 1):
        for i, (n, e) in enumerate([(512, 1), (128, 4), (64, 8), (32, 16), (32, 4), (32, 8)]):
            curve = rising[:e] if n == 32 else [0.9] * e
            recs.append(record(n, e, 1e-4, draw, 0.2 + 0.1 * i, token_accuracy=curve, seed=i + 10 * draw))
    recs.append(record(128, 4, 3e-4, 0, 0.9))  # another rate: not drawn
    fixed, row = [(512, 1), (128, 4), (64, 8), (32, 16)], [(32, 4), (32, 8), (32, 16)]
    series = v3.figure_series(recs, 1e-4, None, RULE, fixed, row)
    assert set(series) == {"0", "1"}
    budget = series["0"]["avg@4"]["fixed budget"]
    assert budget["epochs"] == [1, 4, 8, 16]
    np.testing.assert_allclose(budget["avg@4"][1], v3.item_outcomes(recs[1])["avg@4"].mean())
    assert all(0 < c < 0.2 for c in budget["ci95"])
    assert series["1"]["avg@4"]["32 samples"]["epochs"] == [4, 8, 16]
    curves = series["0"]["token_accuracy"]
    assert curves["32x16"]["fired_at_epoch"] == 5 and curves["32x4"]["fired_at_epoch"] is None
    assert curves["32x8"]["token_accuracy"] == rising[:8]
    del recs[4:6]  # draw 0's 32 x 4 and 32 x 8 not recorded: named, so 32 x 16 keeps its place (and line style)
    partial = v3.figure_series(recs, 1e-4, None, RULE, fixed, row)["0"]["token_accuracy"]
    assert list(partial) == ["32x4", "32x8", "32x16"] and partial["32x4"] is None and partial["32x16"] is not None
    path = v3.plot(series, RULE.metric, tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
