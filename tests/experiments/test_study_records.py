"""Committed study records stand in any checkout: a point is finished by its settings and its data's contents."""

import json
import pathlib
import shutil

import pytest
from ml_collections import ConfigDict

from experiments.study import run_points

DATA = "runs/study/data/train.jsonl"  # relative, as the shipped study configs spell it


def _config() -> ConfigDict:
    return ConfigDict(
        {
            "workdir": "runs/study/base",
            "seed": 0,
            "data": {"source": "jsonl", "train_path": DATA},
            "model": {"name": "a-preset-not-on-disk"},
        }
    )


def _checkout(root: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    data = root / DATA
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def _runner(calls: list[str]):
    def run(c):
        calls.append(c.workdir)
        pathlib.Path(c.workdir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(c.workdir) / "summary.json").write_text(json.dumps({"steps": 1, "seed": c.seed}))

    return run


def test_records_from_another_checkout_rerun_nothing_until_the_data_changes(tmp_path, monkeypatch):
    rows = [{"prompt": "1 + 1 =", "answer": " 2"}, {"prompt": "2 + 2 =", "answer": " 4"}]
    sweep = [{"seed": s, "workdir": f"runs/study/seed{s}"} for s in (42, 43)]
    records = tmp_path / "docs" / "points"  # committed, shared by both checkouts
    calls: list[str] = []

    monkeypatch.chdir(_checkout(tmp_path / "first", rows))
    done = run_points(_config(), sweep, runner=_runner(calls), record_dir=records, evaluate=lambda *_: None)
    assert calls == ["runs/study/seed42", "runs/study/seed43"]
    assert done[0]["inputs"]["data"]["path"] == str(tmp_path / "first" / DATA)  # where it ran, for the reader

    monkeypatch.chdir(_checkout(tmp_path / "second", rows))  # a clean clone elsewhere: same bytes, other path
    fail = lambda *_: pytest.fail("reran a point recorded from the same data in another checkout")
    assert run_points(_config(), sweep, runner=fail, record_dir=records, evaluate=fail) == done

    shutil.rmtree(tmp_path / "second" / "runs")
    monkeypatch.chdir(_checkout(tmp_path / "second", [*rows, {"prompt": "3 + 3 =", "answer": " 6"}]))
    assert run_points(_config(), sweep, record_dir=records, run_missing=False) == []  # other data: not finished


@pytest.mark.parametrize(
    "config_name, points_dir, sweeps",
    [
        ("study_repetition_v2_smollm2", "docs/repetition_study_v2/points", ("get_sweep", "get_lr_sweep")),
        ("study_bitune_v2_smollm2", "docs/bitune_study_v2/points", ("get_sweep",)),
        ("study_bitune_v2_smollm2", "docs/bitune_study_v2/pilot_points", ("get_pilot",)),
        ("study_bitune_v3_gemma3", "docs/bitune_study_v3/pilot_k6", ("get_pilot_k6",)),
        ("study_bitune_v3_gemma3", "docs/bitune_study_v3/pilot_points", ("get_pilot",)),
        ("study_repetition_v3_smollm2", "docs/repetition_study_v3/points", ("get_lr_sweep", "get_pilot", "get_sweep")),
    ],
)
def test_committed_records_keep_their_settings_under_the_current_configs(config_name, points_dir, sweeps):
    """A change of a shipped recipe's defaults (smollm2_bitune's 100 epochs, the saturation metric, keys added
    since) must not turn a committed study point into an unfinished one: the study configs pin what they ran."""
    from bitune_jax.train import run_record
    from experiments.study import load_config_module, point_config

    root = pathlib.Path(__file__).resolve().parents[2]
    module = load_config_module(str(root / "experiments" / "configs" / f"{config_name}.py"))
    config = module.get_config()
    points = [p for sweep in sweeps for p in getattr(module, sweep)()]
    records = {p.stem: json.loads(p.read_text()) for p in (root / points_dir).glob("*.json")}
    checked = set()
    for point in points:
        name = pathlib.Path(point["workdir"]).name
        if name not in records:
            continue
        settings = json.loads(json.dumps(point_config(config, point).to_dict()))
        saved = run_record.with_added_keys(run_record.flat_config(records[name]["config"]))
        current = run_record.with_added_keys(run_record.flat_config(settings))
        assert saved == current, {
            k: (saved.get(k), current.get(k)) for k in saved.keys() | current.keys() if saved.get(k) != current.get(k)
        }
        checked.add(name)
    assert checked == set(records) and checked
