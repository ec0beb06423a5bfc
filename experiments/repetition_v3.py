"""Repetition study v3 (docs/repetition_study_v3/PREREGISTRATION.md): the greedy pass added to each point's eval,
and the pre-registered report: the learning-rate pick, the pilot gate, the saturation rule's pick against one epoch
pooled over the two data draws, and the secondary differences on every outcome (with one exploratory table, not
pre-registered: the steps along the saturation row).

Pure functions over the points' records (`experiments.study.run_points` summaries), except `with_greedy`, which
restores a finished point to decode its held-out problems greedily.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from bitune_jax.eval.intervals import paired_bootstrap
from bitune_jax.eval.reasoning import evaluate
from bitune_jax.tasks import list_edits
from bitune_jax.train import saturation
from bitune_jax.train.evaluation import HeldOutEval
from bitune_jax.train.restore import restore_run
from bitune_jax.train.validate import validate
from experiments.repetition_report import saturation_epoch
from experiments.study import save_png, two_panels

OUTCOMES = ("avg@4", "pass@4", "greedy", "terminated", "steps_right")  # avg@4: the primary metric
# The pilot gate on the one-epoch point: avg@4 in this range, and its epoch's token accuracy below the saturation
# rule's threshold (until 2026-12-07 "<= 0.9": PREREGISTRATION.md, Changes).
GATE = {"avg@4": (0.2, 0.6)}
RULE_EPOCHS = (4, 8, 16)  # the saturation row's points: the rule picks the first at or after it fires


def greedy_eval(model, config) -> tuple[HeldOutEval, list]:
    """The run config's held-out problems (its prompts and scoring), one greedy decode each: `(held_out, records)`."""
    held_out = HeldOutEval.from_config(validate(config, device_count=1), model.lm.tokenizer)
    greedy = dataclasses.replace(held_out.sampling, n=1, temperature=0.0)
    records, _ = evaluate(model, held_out.items, greedy, prompts=held_out.prompts)
    return held_out, records


def with_greedy(config, workdir: str | pathlib.Path, items: dict[str, Any] | None) -> dict[str, Any] | None:
    """A finished point's sampled-eval records (`items`) plus one greedy decode per problem of its final weights:
    `greedy_correct`, `greedy_terminated`, `greedy_steps_right` (of the same `steps_total`)."""
    if items is None:
        return None
    held_out, records = greedy_eval(restore_run(workdir), config)
    by_index = {r.index: r for r in records}
    order = [by_index[i] for i in items["index"]]
    steps = [list_edits.steps_right(held_out.items[r.index].meta, r.generations[0])[0] for r in order]
    return {
        **items,
        "greedy_correct": [int(r.correct[0]) for r in order],
        "greedy_terminated": [int(r.terminated[0]) for r in order],
        "greedy_steps_right": steps,
    }


def point_key(summary: dict[str, Any]) -> tuple[int, int, float, int, tuple[int, int] | None]:
    """(samples, epochs, learning rate, draw, (fewest, most) edits per problem) of a point's record; the edits from
    its overrides, else its config (None when neither says)."""
    p = summary["point"]
    synthetic = (summary.get("config") or {}).get("data", {}).get("synthetic", {})
    low = p.get("data.synthetic.min_steps", synthetic.get("min_steps"))
    high = p.get("data.synthetic.max_steps", synthetic.get("max_steps"))
    edits = None if low is None else (int(low), int(high))
    return p["data.num_samples"], p["train.epochs"], p["train.lr"], p.get("data.pool_seed", 0), edits


def item_outcomes(summary: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per held-out problem, in problem order: avg@4 (the fraction of its samples right), pass@4 (any right), the
    greedy answer right, the fraction of samples that ended with EOS, and the fraction of edits right before the
    first sample's first error. Outcomes a record lacks are left out."""
    items = summary["final_eval_items"]
    order = np.argsort(items["index"])
    correct = [np.asarray(c, np.float64) for c in items["correct"]]
    out = {
        "avg@4": np.asarray([c.mean() for c in correct]),
        "pass@4": np.asarray([float(c.any()) for c in correct]),
        "terminated": np.asarray([np.mean(t) for t in items["terminated"]], np.float64),
    }
    if "steps_right" in items:
        out["steps_right"] = np.asarray(items["steps_right"], np.float64) / np.asarray(items["steps_total"])
    if "greedy_correct" in items:
        out["greedy"] = np.asarray(items["greedy_correct"], np.float64)
    return {k: v[order] for k, v in out.items()}


def lr_pick(
    lr_summaries: list[dict[str, Any]], rates: tuple[float, ...], one_epoch: tuple[int, int], repeated: tuple[int, int]
) -> dict:
    """The rate of `rates` with the highest mean avg@4 over the one-epoch and the most repeated point of the first
    draw (a tie goes to the lower rate); None until both points of every rate are recorded."""
    scores: dict[float, dict[str, float]] = {}
    for s in lr_summaries:
        n, e, lr, *_ = point_key(s)
        if (n, e) in (one_epoch, repeated):
            scores.setdefault(lr, {})[f"{n}x{e}"] = float(item_outcomes(s)["avg@4"].mean())
    complete = {lr: v for lr, v in scores.items() if len(v) == 2}
    for v in complete.values():
        v["mean"] = float(np.mean(list(v.values())))
    pick = max(sorted(complete), key=lambda lr: complete[lr]["mean"]) if set(rates) <= set(complete) else None
    return {"by_lr": {f"{lr:g}": v for lr, v in sorted(scores.items())}, "pick": pick}


def pilot_gate(summary: dict[str, Any], rule: saturation.SaturationConfig) -> dict[str, Any]:
    """The one-epoch point off the floor and not saturated: avg@4 in the gate and its epoch's token accuracy (the
    metric the rule reads) below the rule's threshold, so that repetition has room to raise it."""
    avg = float(item_outcomes(summary)["avg@4"].mean())
    token_accuracy = float(summary["history"][-1][rule.metric])
    low, high = GATE["avg@4"]
    holds = low <= avg <= high and token_accuracy < rule.threshold
    return {"avg@4": avg, rule.metric: token_accuracy, "holds": holds, "gate": {**GATE, "below": rule.threshold}}


def pilot_tries(
    summaries: list[dict[str, Any]], lr: float, edits: list[tuple[int, int]], one_epoch, draw: int, rule
) -> list[dict[str, Any]]:
    """The gate judged on each recorded try, in the order of `edits` (the pilot's difficulties): the one-epoch point
    of `draw` at rate `lr`."""
    by = {point_key(s): s for s in summaries}
    tries = []
    for e in edits:
        s = by.get((*one_epoch, lr, draw, tuple(e)))
        if s is not None:
            tries.append({"edits": list(e), **pilot_gate(s, rule)})
    return tries


def rule_pick(curve: list[float], rule: saturation.SaturationConfig, choices=RULE_EPOCHS) -> dict[str, Any]:
    """The saturation rule replayed on the longest run's per-epoch token accuracy: the first epoch it fires at, and
    the row's point it picks (the smallest epoch count at or after it; the longest when it never fires)."""
    fired = saturation_epoch(curve, rule)
    pick = max(choices) if fired is None else min((e for e in choices if e >= fired), default=max(choices))
    return {"fired_at_epoch": fired, "epochs": pick}


def decision(d: dict[str, Any]) -> str:
    """The pre-registered reading of a paired 95% interval."""
    return "reproduced" if d["low"] > 0 else "not reproduced" if d["high"] < 0 else "unresolved"


def pooled_difference(pairs: list[tuple[dict, dict]], outcome: str) -> dict[str, Any] | None:
    """`a - b` over the problems of every `(a, b)` pair of records (one pair per draw), resampled within each draw."""
    a, b, groups = [], [], []
    for draw, (x, y) in enumerate(pairs):
        ox, oy = item_outcomes(x), item_outcomes(y)
        if outcome not in ox or outcome not in oy:
            return None
        a.append(ox[outcome])
        b.append(oy[outcome])
        groups.append(np.full(len(ox[outcome]), draw))
    if not a:
        return None
    d = paired_bootstrap(np.concatenate(a), np.concatenate(b), groups=np.concatenate(groups))
    return {**d.to_dict(), "draws": len(pairs)}


def grid_points(summaries: list[dict[str, Any]], lr: float, edits: tuple[int, int] | None) -> dict[tuple, dict]:
    """The records at rate `lr` and difficulty `edits` (None: any), by (samples, epochs, lr, draw)."""
    keyed = ((point_key(s), s) for s in summaries)
    return {k[:4]: s for k, s in keyed if k[2] == lr and (edits is None or k[4] == edits)}


def check_budget(summaries: list[dict[str, Any]]) -> None:
    """Every point trained all the updates its config names: one that ran short (an example dropped by truncation, a
    stop) would compare a smaller budget, so the report refuses it, naming the record."""
    short = [
        f"{pathlib.Path(s['config']['workdir']).name}: {s['updates']} of {s['config']['train']['max_updates']} updates"
        for s in summaries
        if s["updates"] != s["config"]["train"]["max_updates"]
    ]
    if short:
        raise ValueError(f"a fixed-budget point ran short, so no comparison holds: {'; '.join(short)}")


def report(
    summaries: list[dict[str, Any]],
    lr: float,
    rule: saturation.SaturationConfig,
    one_epoch,
    row_n,
    edits: list[tuple[int, int]] | None = None,
    expected_draws: tuple[int, ...] | None = None,
) -> dict:
    """The primary comparison (the rule's pick against one epoch, pooled over draws, with its decision), the
    secondary ones (every other point against one epoch on every outcome, pooled and per draw), the pilot gate and,
    exploratory, the steps along the saturation row.

    `one_epoch`: (samples, epochs) of the baseline; `row_n`: the saturation row's sample count; `edits`: the
    pilot's difficulties in order, the grid at the last (points of the others are only the gate's tries; None: one
    difficulty, whatever the records hold); `expected_draws`: the design's draws, so that a primary judged on fewer is
    marked provisional (None: the recorded ones)."""
    check_budget(summaries)
    grid_edits = None if not edits else tuple(edits[-1])
    by = grid_points(summaries, lr, grid_edits)
    draws = sorted({k[3] for k in by})
    base = {d: by.get((*one_epoch, lr, d)) for d in draws}
    out: dict[str, Any] = {"lr": lr, "edits": grid_edits and list(grid_edits), "draws": draws, "pilot_gate": None}
    out |= {"pilot_tries": [], "primary": None, "secondary": [], "saturation_row": []}
    if base.get(draws[0] if draws else 0) is not None:
        out["pilot_gate"] = pilot_gate(base[draws[0]], rule)
    if edits:
        out["pilot_tries"] = pilot_tries(summaries, lr, edits, one_epoch, draws[0] if draws else 0, rule)
    if out["pilot_gate"] is None or not out["pilot_gate"]["holds"]:
        return out  # the grid runs only once the gate holds: no comparison before it
    picks = {}
    for d in draws:
        longest = by.get((row_n, max(RULE_EPOCHS), lr, d))
        if longest is not None:
            picks[d] = rule_pick([h[rule.metric] for h in longest["history"]], rule)
    ready = [d for d in draws if d in picks and base[d] is not None and (row_n, picks[d]["epochs"], lr, d) in by]
    if ready:
        pairs = [(by[(row_n, picks[d]["epochs"], lr, d)], base[d]) for d in ready]
        diff = pooled_difference(pairs, "avg@4")
        out["primary"] = {"picks": {str(d): picks[d] for d in draws if d in picks}, **diff, "decision": decision(diff)}
        out["primary"]["pending_draws"] = sorted(set(expected_draws or draws) - set(ready))
    points = sorted({(k[0], k[1]) for k in by if (k[0], k[1]) != tuple(one_epoch)}, key=lambda p: (-p[0], p[1]))
    for n, e in points:
        have = [d for d in draws if (n, e, lr, d) in by and base[d] is not None]
        for outcome in OUTCOMES:
            pooled = pooled_difference([(by[(n, e, lr, d)], base[d]) for d in have], outcome) if have else None
            if pooled is None:
                continue
            per_draw = {str(d): pooled_difference([(by[(n, e, lr, d)], base[d])], outcome) for d in have}
            out["secondary"].append({"point": f"{n}x{e}", "outcome": outcome, **pooled, "per_draw": per_draw})
    out["saturation_row"] = saturation_row(by, lr, row_n, draws)
    return out


def saturation_row(by: dict[tuple, dict], lr: float, row_n: int, draws: list[int]) -> list[dict[str, Any]]:
    """Exploratory, not pre-registered: each step along the saturation row (`row_n` x e against the row's previous
    epoch count) in avg@4 and in steps right (partial credit, which moves where avg@4 sits at the floor), pooled over
    the draws that have both points. The paper's reading predicts gains up to where the rule fires and none after."""
    epochs = sorted({k[1] for k in by if k[0] == row_n and k[2] == lr})
    steps = []
    for shorter, longer in zip(epochs, epochs[1:]):
        have = [d for d in draws if (row_n, shorter, lr, d) in by and (row_n, longer, lr, d) in by]
        pairs = [(by[(row_n, longer, lr, d)], by[(row_n, shorter, lr, d)]) for d in have]
        for outcome in ("avg@4", "steps_right"):
            diff = pooled_difference(pairs, outcome)  # None when no draw has both points
            if diff is not None:
                steps.append({"step": f"{row_n}x{longer} - {row_n}x{shorter}", "outcome": outcome, **diff})
    return steps


def _interval(d: dict[str, Any]) -> str:
    return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def markdown(lr_choice: dict[str, Any], result: dict[str, Any] | None, one_epoch) -> str:
    """The report's tables, in the pre-registration's order: the rate pick, the gate, the primary, the secondary."""
    base = f"{one_epoch[0]}x{one_epoch[1]}"
    lines = ["## Learning-rate pick (draw 0)", "", "| lr | points (avg@4) | mean |", "| --- | --- | --- |"]
    for lr, v in lr_choice["by_lr"].items():
        points = ", ".join(f"{k} {x:.3f}" for k, x in v.items() if k != "mean")
        lines.append(f"| {lr} | {points} | {v['mean']:.3f} |" if "mean" in v else f"| {lr} | {points} | (pending) |")
    pick = lr_choice["pick"]
    lines += ["", f"Pick: {'pending' if pick is None else format(pick, 'g')}.", ""]
    if result is None:
        return "\n".join(lines)
    gate, tries = result["pilot_gate"], result.get("pilot_tries") or []
    if gate is not None or tries:
        lines += ["## Pilot gate", ""]
        metric = next(k for k in (gate or tries[0]) if k.endswith("token_accuracy"))
    if tries:
        lines += [f"| edits | avg@4 | epoch {metric} | gate |", "| --- | ---: | ---: | --- |"]
        for t in tries:
            e = "-".join(map(str, t["edits"]))
            lines.append(f"| {e} | {t['avg@4']:.3f} | {t[metric]:.3f} | {'holds' if t['holds'] else 'fails'} |")
        lines.append("")
    if gate is not None:
        verdict = "holds" if gate["holds"] else "fails: the difficulty changes (PREREGISTRATION.md, Changes)"
        edits = f", {'-'.join(map(str, result['edits']))} edits" if result.get("edits") else ""
        lines += [
            f"{base} at lr {result['lr']:g}, draw {result['draws'][0]}{edits}: avg@4 {gate['avg@4']:.3f} (gate "
            f"{GATE['avg@4'][0]}-{GATE['avg@4'][1]}), epoch {metric} {gate[metric]:.3f} (gate < "
            f"{gate['gate']['below']:g}, the saturation rule's threshold): the gate {verdict}.",
            "",
        ]
    elif tries:
        lines += ["The try at the grid's difficulty is not recorded yet.", ""]
    lines += ["## Primary: the saturation rule's pick against one epoch (avg@4, pooled over draws)", ""]
    p = result["primary"]
    if p is None and (gate is None or not gate["holds"]):
        lines.append("Not run: the grid waits for the pilot gate to hold.")
        return "\n".join(lines)
    if p is None:
        lines.append("Pending: the saturation row and the one-epoch point of a draw are not all recorded yet.")
    else:
        picks = "; ".join(
            f"draw {d}: fires at epoch {v['fired_at_epoch']}, picks {v['epochs']} epochs" for d, v in p["picks"].items()
        )
        lines.append(f"{picks}. Difference {_interval(p)} over {p['items']} problem pairs: **{p['decision']}**.")
        if p.get("pending_draws"):
            pending = ", ".join(map(str, p["pending_draws"]))
            lines.append(
                f"Provisional: draw {pending} not recorded yet; the pre-registered decision is the one pooled over"
                " every draw."
            )
    lines += ["", f"## Secondary: each point against {base}", "", "| point | outcome | pooled | per draw |"]
    lines.append("| --- | --- | --- | --- |")
    for s in result["secondary"]:
        per = "; ".join(f"{d}: {_interval(v)}" for d, v in s["per_draw"].items() if v is not None)
        lines.append(f"| {s['point']} | {s['outcome']} | {_interval(s)} | {per} |")
    if result.get("saturation_row"):
        lines += ["", "## Exploratory (not pre-registered): steps along the saturation row", ""]
        lines += ["| step | outcome | pooled | draws |", "| --- | --- | --- | ---: |"]
        lines += [f"| {s['step']} | {s['outcome']} | {_interval(s)} | {s['draws']} |" for s in result["saturation_row"]]
    return "\n".join(lines)


def points_table(summaries: list[dict[str, Any]], rule: saturation.SaturationConfig) -> str:
    """Every recorded point: its outcomes averaged over the problems, and its last epoch's token accuracy."""
    lines = [
        f"| point | avg@4 | pass@4 | greedy | terminated | steps right | final {rule.metric} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = lambda s: (point_key(s)[4] or (0, 0), point_key(s)[2], point_key(s)[3], -point_key(s)[0], point_key(s)[1])
    for s in sorted(summaries, key=order):
        o = item_outcomes(s)
        cells = [f"{o[k].mean():.3f}" if k in o else "-" for k in OUTCOMES]
        name = pathlib.Path(s["config"]["workdir"]).name
        lines.append(f"| {name} | {' | '.join(cells)} | {s['history'][-1][rule.metric]:.3f} |")
    return "\n".join(lines)


def figure_series(
    summaries: list[dict[str, Any]], lr: float, edits: tuple[int, int] | None, rule, fixed: list, row: list
) -> dict[str, Any]:
    """What the figure draws, per draw: avg@4 (mean over problems, 95% normal interval) against epochs along the
    fixed budget (`fixed`: its (samples, epochs) points) and along the saturation row (`row`), and the row's
    per-epoch token accuracy (the rule's metric) with the epoch the rule fires at."""
    by = grid_points(summaries, lr, edits)
    out: dict[str, Any] = {}
    for d in sorted({k[3] for k in by}):
        series = {}
        for name, points in (("fixed budget", fixed), (f"{row[0][0]} samples", row)):
            have = [(n, e) for n, e in points if (n, e, lr, d) in by]
            avg = [item_outcomes(by[(n, e, lr, d)])["avg@4"] for n, e in have]
            series[name] = {
                "epochs": [e for _, e in have],
                "avg@4": [float(a.mean()) for a in avg],
                "ci95": [float(1.96 * a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0 for a in avg],
            }
        curves: dict[str, Any] = {}
        for n, e in row:  # every row point, in order (None: not recorded), so each keeps its line style
            curve = [h[rule.metric] for h in by[(n, e, lr, d)]["history"]] if (n, e, lr, d) in by else None
            curves[f"{n}x{e}"] = curve and {"token_accuracy": curve, "fired_at_epoch": saturation_epoch(curve, rule)}
        out[str(d)] = {"avg@4": series, "token_accuracy": curves}
    return out


def plot(series: dict[str, Any], metric: str, path: pathlib.Path) -> pathlib.Path:
    """Left: avg@4 against epochs, the fixed budget solid, the saturation row dashed, a colour per draw. Right: the
    row's token accuracy per epoch, a star where the rule fires."""
    fig, left, right = two_panels(12, 4.2)
    for i, (draw, s) in enumerate(series.items()):
        color = f"C{i}"
        for (name, xs), style in zip(s["avg@4"].items(), ("-", "--")):
            if xs["epochs"]:
                left.errorbar(
                    xs["epochs"],
                    xs["avg@4"],
                    yerr=xs["ci95"],
                    marker="o",
                    capsize=3,
                    linestyle=style,
                    color=color,
                    label=f"{name}, draw {draw}",
                )
        for (name, c), style in zip(s["token_accuracy"].items(), (":", "--", "-")):
            if c is None:
                continue
            epochs = np.arange(1, len(c["token_accuracy"]) + 1)
            right.plot(epochs, c["token_accuracy"], linestyle=style, color=color, label=f"{name}, draw {draw}")
            if c["fired_at_epoch"] is not None:
                e = c["fired_at_epoch"]
                right.plot([e], [c["token_accuracy"][e - 1]], marker="*", markersize=12, color=color)
    left.set(xlabel="epochs", ylabel="held-out avg@4 (95% interval)", title="held-out avg@4", ylim=(0, 1))
    left.set_xscale("log", base=2)
    ticks = sorted({e for s in series.values() for xs in s["avg@4"].values() for e in xs["epochs"]})
    left.set_xticks(ticks, [str(e) for e in ticks])
    right.set(xlabel="epoch", ylabel=f"training {metric}", title="token accuracy (star: the rule fires)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)
