"""Run a study's grid (a config file with `get_config()` and `get_sweep()`) and collect what each point measured.

Shared by the repetition and Bitune studies: a point's run is `bitune_jax.train.loop.run` on the base config with the
point's overrides; a point whose workdir summary or committed record holds the same settings is not run again, so an
interrupted study resumes by running the same command (an unfinished point resumes from its last checkpoint, or
starts over if it saved none).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import pathlib
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from ml_collections import ConfigDict

from bitune_jax.train import run_record
from bitune_jax.train.loop import run


def study_from_flags(argv: list[str], config_flag) -> tuple[ConfigDict, list[dict[str, Any]]]:
    """`(config, sweep)` of a study script's `--config` flag (an `absl` flag from `DEFINE_config_file`)."""
    from absl import app, logging
    from ml_collections import config_flags

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    module = load_config_module(config_flags.get_config_filename(config_flag))
    return config_flag.value, module.get_sweep()


def load_config_module(path: str | pathlib.Path):
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("get_config", "get_sweep"):
        if not hasattr(module, name):
            raise SystemExit(f"{path} has no {name}(): a study config defines both")
    return module


def point_config(config: ConfigDict, point: Mapping[str, Any]) -> ConfigDict:
    """`config` with the point's dotted-key overrides; an unknown key is an error naming it."""
    c = copy.deepcopy(config)
    c.unlock()
    known = set(_flatten(c.to_dict()))
    unknown = sorted(set(point) - known)
    if unknown:
        raise KeyError(f"sweep point sets unknown config keys {unknown}")
    c.update_from_flattened_dict(dict(point))
    c.lock()
    return c


def point_name(point: Mapping[str, Any]) -> str:
    """A point's name: its workdir's last component (also its record's file name)."""
    return pathlib.Path(point["workdir"]).name


def select_points(sweep: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """The named points of `sweep`, in the order named (a study script's `--only`); an unknown name is an error
    listing the study's points, raised before anything runs."""
    by_name = {point_name(p): p for p in sweep}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise ValueError(f"--only names no point of this study: {unknown}; points: {sorted(by_name)}")
    return [by_name[n] for n in names]


def missing_points(sweep: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[str]:
    """The names of the sweep's points that have no summary (`run_points(..., run_missing=False)` leaves them out)."""
    done = {point_name(s["point"]) for s in summaries}
    return [name for name in dict.fromkeys(map(point_name, sweep)) if name not in done]


def under_way(missing: list[str]) -> str:
    """The report's line for a study whose points are not all run yet."""
    return f"**Study under way**: {len(missing)} point(s) not run yet: {', '.join(missing)}."


def run_points(
    config: ConfigDict,
    sweep: list[dict[str, Any]],
    runner: Callable[[ConfigDict], dict[str, Any]] = run,
    record_dir: str | pathlib.Path | None = None,
    evaluate: Callable[[ConfigDict, pathlib.Path], dict[str, Any] | None] | None = None,
    run_missing: bool = True,
) -> list[dict[str, Any]]:
    """Each point's summary (with its `point` overrides and `config`), running only the points not yet done.

    A point is done when its workdir's `summary.json`, or with `record_dir` its record `record_dir/NAME.json` (NAME:
    the workdir's last component), holds the same settings and inputs (`run_inputs`). Records are small (the summary
    plus the final held-out eval per item, `final_eval_items`) and meant to be committed: a clean checkout then
    reruns no finished point. `evaluate(config, workdir)` gives a finished run's per-item results; by default the
    trainer's last held-out generation eval (`final_eval_items`). `run_missing=False` runs nothing: the points not
    done are left out (a report of a study still under way).
    """
    evaluate = (lambda _, workdir: final_eval_items(workdir)) if evaluate is None else evaluate
    summaries = []
    for point in sweep:
        c = point_config(config, point)
        settings = json.loads(json.dumps(c.to_dict()))  # as it reads back from JSON (tuples become lists)
        workdir = pathlib.Path(c.workdir)
        record = pathlib.Path(record_dir) / f"{workdir.name}.json" if record_dir is not None else None
        inputs = run_inputs(c)
        done = _finished(record, settings, inputs) or _finished(workdir / "summary.json", settings, inputs)
        if done is None and not run_missing:
            print(f"not run yet: {workdir.name}", flush=True)
            continue
        if done is None:
            resuming = _interrupted_run_of(workdir, c)
            if not resuming:
                shutil.rmtree(workdir, ignore_errors=True)  # never resume another setting's state
            print(f"=== study point {point}{' (resuming its interrupted run)' if resuming else ''}", flush=True)
            runner(c)
            done = json.loads((workdir / "summary.json").read_text())
            done["config"] = settings
            done["inputs"] = run_inputs(c)  # after the run: a warm-up the runner built now has weights to hash
            done["final_eval_items"] = evaluate(c, workdir)
            (workdir / "summary.json").write_text(json.dumps(done, indent=2))
        if record is not None and _finished(record, settings, inputs) is None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(done, indent=2) + "\n")
        summaries.append({**done, "point": dict(point)})
    return summaries


def _interrupted_run_of(workdir: pathlib.Path, config: ConfigDict) -> bool:
    """The workdir holds a run of these same settings that did not finish (a point of a multi-hour study killed with
    its session): the trainer resumes it from its last checkpoint instead of the point starting over."""
    if not (workdir / run_record.RECORD_NAME).exists():
        return False
    try:
        run_record.check_resume(workdir, config, resuming=True)
    except run_record.ResumeChangedError:
        return False
    return True


def run_inputs(config: ConfigDict) -> dict[str, Any]:
    """The identity of what a point trains on: its data (the generated records' hash for a synthetic task, the
    file's for JSONL) and its initial weights, by the recipe that made them where the model has one (a warm-up
    retrained on another machine is the same starting point), else by their bytes (`bitune_jax.train.run_record`)."""
    return {"data": run_record.data_identity(config), "weights": run_record.origin_identity(config.model.name)}


def _finished(path: pathlib.Path | None, settings: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The summary at `path` if it is of these settings and inputs. The data is compared by content, not path (a
    checkout elsewhere holds the same file under another absolute path). Initial weights that are not on this
    machine (a clean checkout without the warm-up model) cannot be compared, so a record is trusted on its data
    then."""
    if path is None or not path.exists():
        return None
    done = json.loads(path.read_text())
    saved = done.get("inputs") or {}
    weights_unknown = str(inputs["weights"]).startswith("name:") and str(saved.get("weights")).startswith(
        ("sha256:", "recipe:")
    )
    same = (
        run_record.with_added_keys(run_record.flat_config(done.get("config") or {}))
        == run_record.with_added_keys(run_record.flat_config(settings))
        and run_record.data_contents(saved.get("data")) == run_record.data_contents(inputs["data"])
        and (saved.get("weights") == inputs["weights"] or weights_unknown)
    )
    return done if same else None


def final_eval_items(workdir: str | pathlib.Path) -> dict[str, list] | None:
    """Per held-out item of the run's last eval (`workdir/eval/epoch_*.jsonl`): whether each sample was correct, its
    length in tokens and whether it ended with EOS (lists of lists, one inner list per item, one entry per sample),
    so two points can be compared item by item (paired bootstrap). None: the run evaluated nothing."""
    files = sorted((pathlib.Path(workdir) / "eval").glob("epoch_*.jsonl"))
    if not files:
        return None
    rows = [json.loads(line) for line in files[-1].read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if "summary" not in r]
    return {
        "epoch": int(files[-1].stem.split("_")[1]),
        "index": [r["index"] for r in rows],
        "correct": [r["correct"] for r in rows],
        "lengths": [r["lengths"] for r in rows],
        "terminated": [r["terminated"] for r in rows],
    }


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def two_panels(width: float, height: float):
    """`(figure, left axes, right axes)` on matplotlib's Agg canvas (never touches the process-wide backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    return fig, left, right


def write_report(out: str | pathlib.Path, table: str, results: dict[str, Any]) -> pathlib.Path:
    """`results.md` (the table) and `results.json` (every number behind it) into `out`; returns `out`."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return out


def save_png(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
