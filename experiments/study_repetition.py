"""The repetition study: run the grid, replay the saturation rule, and write the table, the intervals and a figure.

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_v2_smollm2.py \\
        --out=docs/repetition_study_v2 [--only=256x1,64x4] [--lr_sweep] [--config.train.lr=...]

Each point's record (its run summary plus the final held-out eval per item) goes to `OUT/points/NAME.json`; a point
whose record holds the same settings is not run again, so committed records make a clean checkout rerun nothing
(`experiments.study.run_points`). A config module with a `WARMUP` directory trains that warm-up
(`experiments.list_edits_warmup.warm_up`) the first time a point needs its model, and its results are copied to
`OUT/warmup.json`. `--lr_sweep` also runs the config's `get_lr_sweep()` (the learning-rate pick on the one-epoch
point; a v3 config's always). `--only` runs just the named points (NAME: a point workdir's last component) and
writes no report: a way to spend a spare hour on one point.

Writes `results.md` (tables), `results.json` (every number behind them) and `figure.png` into `--out`:
  * per point: held-out accuracy with its binomial standard error, termination rate, mean length, final token
    accuracy over all answer tokens and as the mean of each sample's own, and the epoch at which the saturation
    rule would have stopped on either aggregation;
  * paired bootstrap intervals (`bitune_jax.eval.intervals`) for every fixed-budget point against the one-epoch
    point, the best repetition point against it, and each step along the fixed-n row; an interval containing 0
    is reported as unresolved;
  * the fixed-n judgement: once a point of the row reaches the saturation threshold, do more epochs still help?

A config module with `DRAWS` is the pre-registered v3 design (docs/repetition_study_v3/PREREGISTRATION.md): each
point's eval adds a greedy pass, the points run in its order (the rate pick's, the pilot gate's try at each
difficulty of the config's `EDITS`, then the grid, only once the try at its difficulty holds the gate), and the report
is `experiments.repetition_v3`'s (the rate pick, the gate's tries, the saturation rule's pick against one epoch pooled
over the draws with its decision, every outcome's differences).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bitune_jax.eval.intervals import binomial_se, paired_bootstrap
from bitune_jax.tasks import list_edits, registry
from bitune_jax.train import saturation
from experiments import repetition_v3
from experiments.repetition_report import (
    METRICS,
    fixed_budget,
    fixed_n_row,
    markdown_tables,
    plot,
    saturation_epoch,
)
from experiments.study import (
    final_eval_items,
    load_config_module,
    missing_points,
    point_name,
    run_points,
    select_points,
    study_from_flags,
    under_way,
    write_report,
)


def point_row(summary: dict[str, Any], rule: saturation.SaturationConfig) -> dict[str, Any]:
    """One grid point's numbers: held-out accuracy at the end (and before/along when the run measured them), token
    accuracy per epoch on both aggregations, and where the saturation rule would have fired on each."""
    history = summary["history"]
    config = summary.get("config", {})
    samples, epochs = summary["point"]["data.num_samples"], summary["point"]["train.epochs"]
    updates_per_epoch = summary["planned_updates"] / epochs
    evals = [(e + 1, h) for e, h in enumerate(history) if "eval_avg@n" in h]
    start = summary.get("start_eval") or {}
    final = evals[-1][1]
    items = summary.get("final_eval_items")
    n_items = len(items["correct"]) if items else config.get("eval", {}).get("num_items", 0)
    row: dict[str, Any] = {
        "name": point_name(summary["config"]),
        "samples": samples,
        "epochs": epochs,
        "updates": summary["steps"],
        "lr": config.get("train", {}).get("lr"),
        "held_out_items": n_items,
        "held_out_start": start.get("eval_avg@n"),
        "held_out_final": final["eval_avg@n"],
        "held_out_se": binomial_se(final["eval_avg@n"], n_items),
        "held_out_best": max(h["eval_avg@n"] for _, h in evals),
        "terminated_final": final["eval_terminated_fraction"],
        "mean_length_final": final.get("eval_mean_length"),
        "memorized_final": history[-1]["memorized_fraction"],
        "steps_right_fraction": (
            float(np.mean(np.asarray(items["steps_right"]) / np.asarray(items["steps_total"])))
            if items and "steps_right" in items
            else None
        ),
        "curve_updates": ([0] if start else []) + [int(e * updates_per_epoch) for e, _ in evals],
        "curve_held_out": ([start["eval_avg@n"]] if start else []) + [h["eval_avg@n"] for _, h in evals],
    }
    for metric in METRICS:
        curve = [h[metric] for h in history if metric in h]
        row[metric] = curve
        row[f"{metric}_final"] = curve[-1] if curve else None
        sat = saturation_epoch(curve, rule) if curve else None
        row[f"saturation_epoch_{metric}"] = sat
        row[f"saturation_update_{metric}"] = None if sat is None else int(sat * updates_per_epoch)
    return row


def trace_eval_items(config, workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """`final_eval_items` plus, on the list-edits task, how many steps of each generated trace (first sample) are
    right before the first wrong one (`steps_right`, of `steps_total`): where a wrong answer went wrong."""
    items = final_eval_items(workdir)
    if items is None or config.data.synthetic.task != "list_edits" or config.eval.source != "synthetic":
        return items
    test = registry.split(config.data.synthetic)[1]
    files = sorted((pathlib.Path(workdir) / "eval").glob("epoch_*.jsonl"))
    rows = [json.loads(line) for line in files[-1].read_text(encoding="utf-8").splitlines() if line.strip()]
    counts = [list_edits.steps_right(test[r["index"]].meta, r["generations"][0]) for r in rows if "summary" not in r]
    return {**items, "steps_right": [k for k, _ in counts], "steps_total": [n for _, n in counts]}


def item_scores(summary: dict[str, Any]) -> np.ndarray | None:
    """Per held-out item, the fraction of its samples that were right (greedy: 0 or 1), in item order."""
    items = summary.get("final_eval_items")
    if not items:
        return None
    order = np.argsort(items["index"])
    return np.asarray([np.mean(c) for c in items["correct"]], np.float64)[order]


def item_steps_right(summary: dict[str, Any]) -> np.ndarray | None:
    """Per held-out item, the fraction of its edits right before the trace's first error, in item order."""
    items = summary.get("final_eval_items")
    if not items or "steps_right" not in items:
        return None
    order = np.argsort(items["index"])
    return (np.asarray(items["steps_right"], np.float64) / np.asarray(items["steps_total"]))[order]


def comparisons(summaries: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired differences on the held-out items: the fixed-budget points against the one-epoch point, the best
    repetition point against it, and each step along the fixed-n row (rows sharing one sample count)."""
    scores = {r["name"]: item_scores(s) for s, r in zip(summaries, rows, strict=True)}
    diff = lambda a, b: (
        paired_bootstrap(scores[a], scores[b]) if scores[a] is not None and scores[b] is not None else None
    )
    out: dict[str, Any] = {"fixed_budget": [], "best_repetition": None, "fixed_n": [], "fixed_n_judgement": None}

    budget = fixed_budget(rows)
    diagonal = sorted((r for r in rows if r["updates"] == budget), key=lambda r: r["epochs"])
    one_epoch = next((r for r in diagonal if r["epochs"] == 1), None)
    if one_epoch is not None:
        for r in diagonal:
            if r is not one_epoch and (d := diff(r["name"], one_epoch["name"])) is not None:
                out["fixed_budget"].append({"point": r["name"], "against": one_epoch["name"], **d.to_dict()})
        repeated = [r for r in diagonal if r["epochs"] > 1]
        if repeated:
            best = max(repeated, key=lambda r: r["held_out_final"])
            if (d := diff(best["name"], one_epoch["name"])) is not None:
                out["best_repetition"] = {"point": best["name"], "against": one_epoch["name"], **d.to_dict()}

    row_n = fixed_n_row(rows)
    if len(row_n) >= 3:
        for prev, nxt in zip(row_n, row_n[1:]):
            if (d := diff(nxt["name"], prev["name"])) is not None:
                out["fixed_n"].append({"point": nxt["name"], "against": prev["name"], **d.to_dict()})
        steps = {r["name"]: item_steps_right(s) for s, r in zip(summaries, rows, strict=True)}
        out["fixed_n_judgement"] = fixed_n_judgement(row_n, {"held-out accuracy": scores, "steps right": steps})
    return out


def fixed_n_judgement(
    row_n: list[dict[str, Any]], outcomes: dict[str, dict[str, np.ndarray | None]]
) -> dict[str, Any] | None:
    """The saturation rule, judged on the fixed-n row: the first point whose final token accuracy reaches the
    threshold is where the rule says "stop"; do the longer points of the row still gain on it? Judged on each
    outcome (`outcomes`: name -> point -> per-item scores), since held-out accuracy can sit at the floor while the
    steps right before the first error still move."""
    threshold = saturation.SaturationConfig().threshold
    out = {"threshold": threshold, "by_metric": {}}
    for metric in METRICS:
        hit = next((r for r in row_n if (r[f"{metric}_final"] or 0) >= threshold), None)
        judged = {"saturated_point": None if hit is None else hit["name"], "by_outcome": {}}
        out["by_metric"][metric] = judged
        if hit is None:
            continue
        for outcome, scores in outcomes.items():
            later = []
            for r in row_n[row_n.index(hit) + 1 :]:
                if scores.get(r["name"]) is not None and scores.get(hit["name"]) is not None:
                    d = paired_bootstrap(scores[r["name"]], scores[hit["name"]])
                    later.append({"point": r["name"], **d.to_dict()})
            if not later:
                verdict = "no longer point in the row"
            elif any(x["resolved"] and x["estimate"] > 0 for x in later):
                verdict = "still improves"
            elif any(x["resolved"] for x in later):
                verdict = "gets worse"
            else:
                verdict = "no resolved change"
            judged["by_outcome"][outcome] = {"later": later, "verdict": verdict}
    return out


def _ensure_warmup(module, out: pathlib.Path) -> None:
    """Train and export the config's warm-up model if a point needs it and it is not there; copy its results."""
    warmup = getattr(module, "WARMUP", None)
    if warmup is None:
        return
    warmup = pathlib.Path(warmup)
    if not (warmup / "model" / "config.json").exists():
        from experiments.list_edits_warmup import warm_up

        warm_up(out=warmup)
    if (warmup / "results.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        results = json.loads((warmup / "results.json").read_text())
        (out / "warmup.json").write_text(json.dumps({k: results[k] for k in ("headline", "gate")}, indent=2) + "\n")


def main(argv):
    from bitune_jax.train.loop import run

    config, sweep = study_from_flags(argv, flags.FLAGS["config"])
    module = load_config_module(config_flags.get_config_filename(flags.FLAGS["config"]))
    out = pathlib.Path(flags.FLAGS.out)
    v3 = hasattr(module, "DRAWS")  # the pre-registered v3 design: two draws, a greedy pass, its own report
    # The rate pick is part of v3's design, so its points are always v3's (no flag needed).
    lr_sweep = module.get_lr_sweep() if (flags.FLAGS.lr_sweep or v3) and hasattr(module, "get_lr_sweep") else []

    def runner(c):
        _ensure_warmup(module, out)
        return run(c)

    evaluate = (lambda c, w: repetition_v3.with_greedy(c, w, trace_eval_items(c, w))) if v3 else trace_eval_items
    pilot = module.get_pilot() if v3 else []
    if flags.FLAGS.only:
        chosen = select_points(sweep + lr_sweep + pilot, flags.FLAGS.only)
        run_points(config, chosen, runner=runner, record_dir=out / "points", evaluate=evaluate)
        return

    run_missing = not flags.FLAGS.report_only
    keep = dict(runner=runner, record_dir=out / "points", evaluate=evaluate, run_missing=run_missing)
    if v3:
        _study_v3(module, out, config, sweep, lr_sweep, pilot, keep)
        return
    summaries = run_points(config, sweep, **keep)
    lr_summaries = run_points(config, lr_sweep, **keep) if lr_sweep else []
    missing = missing_points(sweep + lr_sweep, summaries + lr_summaries)
    rule = saturation.SaturationConfig()  # the trainer's default rule
    rows = [point_row(s, rule) for s in summaries]
    if not rows:
        raise SystemExit(f"no grid point is recorded in {out / 'points'} yet; not run: {', '.join(missing)}")
    lr_rows = [point_row(s, rule) for s in lr_summaries]
    comp = comparisons(summaries, rows)
    table = markdown_tables(rows, comp, lr_rows)
    if missing:
        table += "\n\n" + under_way(missing)
    report = {"rows": rows, "lr_rows": lr_rows, "comparisons": comp, "missing": missing, "config": config.to_dict()}
    if (out / "warmup.json").exists():
        report["warmup"] = json.loads((out / "warmup.json").read_text())
    write_report(out, table, report)
    plot(rows, out / "figure.png")
    print(table)
    for r in rows:
        print(f"held_out_accuracy_{r['samples']}x{r['epochs']}: {r['held_out_final']:.4f}")
    if comp["best_repetition"]:
        b = comp["best_repetition"]
        print(f"best_repetition_minus_one_epoch: {b['estimate']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]")


def _study_v3(module, out, config, sweep, lr_sweep, pilot, keep) -> None:
    """The pre-registered order: the rate pick's points, then the pilot gate's tries, then the grid, which runs only
    once the try at its difficulty (`EDITS[-1]`) holds the gate; then the report (`experiments.repetition_v3`)."""
    rule = saturation.SaturationConfig()  # the trainer's default rule
    lr_summaries = run_points(config, lr_sweep, **keep)
    pilot_summaries = run_points(config, pilot, **keep)
    gate_try = [s for s in pilot_summaries if point_name(s["point"]) == point_name(pilot[-1])] if pilot else []
    holds = bool(gate_try) and repetition_v3.pilot_gate(gate_try[0], rule)["holds"]
    if pilot and not holds and keep["run_missing"]:
        print(
            f"the pilot gate does not hold at {point_name(pilot[-1])}: no grid point runs; change EDITS in the config"
            " and record why in PREREGISTRATION.md, Changes",
            flush=True,
        )
    summaries = run_points(config, sweep, **{**keep, "run_missing": keep["run_missing"] and holds})
    recorded = list({point_name(s["point"]): s for s in lr_summaries + pilot_summaries + summaries}.values())
    missing = missing_points(lr_sweep + pilot + sweep, recorded)
    if not recorded:
        raise SystemExit(f"no point is recorded in {out / 'points'} yet; not run: {', '.join(missing)}")
    one_epoch, row_n = module.DIAGONAL[0], module.SATURATION_ROW[0][0]
    lr_choice = repetition_v3.lr_pick(lr_summaries, module.LR_CHOICES, one_epoch, module.DIAGONAL[-1])
    lr = module.LR if module.LR is not None else lr_choice["pick"]
    edits = module.EDITS if module.LR is not None else None
    result = repetition_v3.report(recorded, lr, rule, one_epoch, row_n, edits, module.DRAWS) if lr is not None else None
    table = repetition_v3.markdown(lr_choice, result, one_epoch) + "\n\n## Every point\n\n"
    table += repetition_v3.points_table(recorded, rule)
    if missing:
        table += "\n\n" + under_way(missing)
    write_report(out, table, {"lr_pick": lr_choice, "result": result, "missing": missing, "config": config.to_dict()})
    if lr is not None:
        grid = module.DIAGONAL, [*module.SATURATION_ROW, module.DIAGONAL[-1]]
        series = repetition_v3.figure_series(recorded, lr, tuple(module.EDITS[-1]), rule, *grid)
        if series:
            repetition_v3.plot(series, rule.metric, out / "figure.png")
    print(table)
    if result is not None and result["primary"] is not None:
        p = result["primary"]
        print(f"rule_pick_minus_one_epoch_avg@4: {p['estimate']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]")


def _define_flags() -> None:
    """Flags are defined only when run as a script, so the studies' helpers import side by side (tests)."""
    config_flags.DEFINE_config_file("config", None, "a study config file (get_config and get_sweep)", lock_config=True)
    flags.DEFINE_string("out", "docs/repetition_study_v2", "where the records, tables and the figure go")
    flags.DEFINE_list("only", [], "run only these points (workdir names), write no report")
    flags.DEFINE_bool("lr_sweep", False, "also run the config's get_lr_sweep() points")
    flags.DEFINE_bool("report_only", False, "run nothing: report the recorded points, list the others")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
