"""Repetition v3's pre-registered order, on a runner that trains nothing: the rate pick's points, then the pilot
gate's try at each difficulty, and the grid only once the try at its difficulty holds the gate."""

import importlib
import json
import pathlib

import numpy as np

from experiments import study_repetition
from experiments.study import point_name

ITEMS = 128


def fake_runner(calls):
    """Writes the summary a finished run leaves: the per-epoch token accuracy (0.9 at one epoch, rising with
    repetition) and the held-out eval on the last epoch."""

    def runner(c):
        calls.append(pathlib.Path(c.workdir).name)
        epochs = c.train.epochs
        history = [
            {"token_accuracy": a, "sample_token_accuracy": a, "memorized_fraction": 0.0}
            for a in np.linspace(0.9, 0.999, epochs)
        ]
        history[-1] |= {"eval_avg@n": 0.0, "eval_terminated_fraction": 1.0, "eval_mean_length": 100.0}
        steps = c.data.num_samples * epochs
        summary = {"history": history, "steps": steps, "updates": steps, "planned_updates": steps}
        pathlib.Path(c.workdir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(c.workdir) / "summary.json").write_text(json.dumps(summary))
        return summary

    return runner


def fake_eval(c, workdir):
    """4 samples per problem, right with a probability set by the difficulty: one epoch at 3-5 edits lands above
    the gate's avg@4 range, at 5-8 inside it."""
    p = 0.85 if c.data.synthetic.max_steps <= 5 else 0.4
    rng = np.random.default_rng(c.data.num_samples * 100 + c.train.epochs + c.data.pool_seed)
    correct = (rng.random((ITEMS, 4)) < p).astype(int).tolist()
    return {
        "index": list(range(ITEMS)),
        "correct": correct,
        "terminated": [[1] * 4] * ITEMS,
        "greedy_correct": [c[0] for c in correct],
    }


def test_the_grid_waits_for_the_gate_at_its_difficulty(tmp_path, monkeypatch, capsys):
    m = importlib.import_module("experiments.configs.study_repetition_v3_smollm2")
    monkeypatch.chdir(tmp_path)  # the points' workdirs are relative: runs/study_repetition_v3/...
    monkeypatch.setattr(m, "LR", 1e-4)
    monkeypatch.setattr(m, "EDITS", [(3, 5)])
    config = m.get_config()
    config.model.name = str(tmp_path / "no_model")  # weights identified by name: nothing is loaded
    calls = []
    out = tmp_path / "report"
    keep = dict(runner=fake_runner(calls), record_dir=out / "points", evaluate=fake_eval, run_missing=True)

    def study():
        study_repetition._study_v3(m, out, config, m.get_sweep(), m.get_lr_sweep(), m.get_pilot(), keep)
        return json.loads((out / "results.json").read_text())

    first = study()
    assert sorted(calls) == sorted(point_name(p) for p in m.get_lr_sweep())  # the gate's try is the pick's own point
    assert "the pilot gate does not hold at 512x1_lr0.0001_draw0" in capsys.readouterr().out
    result = first["result"]
    assert result["pilot_gate"]["holds"] is False and result["primary"] is None
    assert [t["edits"] for t in result["pilot_tries"]] == [[3, 5]]
    assert len(first["missing"]) == 10  # the grid but the rate pick's two points of draw 0
    text = (out / "results.md").read_text()
    assert "Not run: the grid waits for the pilot gate to hold." in text and "## Secondary" not in text

    # The difficulty changes (recorded in the pre-registration): the pilot reruns at 5-8 edits, then the grid.
    monkeypatch.setattr(m, "EDITS", [(3, 5), (5, 8)])
    calls.clear()
    second = study()
    assert calls[0] == "512x1_lr0.0001_draw0_edits5-8" and len(calls) == 12
    assert all(c.endswith("_edits5-8") for c in calls)
    result = second["result"]
    assert [t["holds"] for t in result["pilot_tries"]] == [False, True] and result["pilot_gate"]["holds"]
    assert result["edits"] == [5, 8] and result["primary"] is not None and second["missing"] == []
    assert {s["point"] for s in result["secondary"]} == {"128x4", "64x8", "32x16", "32x4", "32x8"}
    text = (out / "results.md").read_text()
    assert "| 3-5 | " in text and "| 5-8 | " in text and "5-8 edits" in text

    calls.clear()
    study()
    assert calls == []  # every point recorded: nothing reruns
