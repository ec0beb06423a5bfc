"""The Bitune study: arms x fact orders x seeds on the 2-hop task, scored by log-likelihood, with paired intervals.

    python -m experiments.study_bitune --config=experiments/configs/study_bitune_v2_smollm2.py \\
        --out=docs/bitune_study_v2 [--pilot] [--only=lora_reverse_seed42,...] [--report_only]

The config module names the task (`NUM_FACTS`, `ORDERS`, `DATA_SEED`, `TRAIN_ITEMS`, `TEST_ITEMS`, `train_path`)
and the grid (`get_sweep()`; `get_pilot()` for `--pilot`). This script writes each order's training problems as
JSONL (`two_hop.train_test_split`, the authors' plain format), runs every point not yet recorded
(`experiments.study.run_points`; a record is `OUT/points/NAME.json`), and scores each trained run on the held-out
problems of its order by log-likelihood of each choice (`score_choices` on `restore_run`'s model, the training
rendering). A record holds the per-item results, so arms pair item by item.

Writes into `--out`: `results.md` (accuracy per arm and order, mean and spread over seeds; paired differences pooled
over seeds with 95% bootstrap intervals resampled within seed; the order interaction), `results.json` and
`figure.png` (accuracy per arm and order with seeds; Bitune's mixing coefficients per layer; training loss curves).
`--report_only` runs nothing and reports the recorded points, naming the others (a study under way). `--pilot` runs
the config's pilot instead (plain LoRA along one run per K, every checkpoint scored) and writes
`OUT/pilot.md` and `OUT/pilot.json`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bitune_jax.eval.intervals import paired_bootstrap
from bitune_jax.eval.multiple_choice import MCConfig, score_choices
from bitune_jax.tasks import two_hop
from bitune_jax.train.restore import restore_run
from experiments.study import (
    load_config_module,
    missing_points,
    point_name,
    run_points,
    save_png,
    select_points,
    study_from_flags,
    under_way,
    write_report,
)

# The training rendering: "Question: {user message}\n\nAnswer:" verbatim (the item's question is that whole text),
# each choice scored as " color" + nothing, BOS as the tokenizer adds it in training (none for SmolLM2).
SCORING = MCConfig(prompt_format="plain", template="{question}", add_bos=None)
ARM_NAMES = {"lora": "LoRA", "lora_r16": "LoRA r16", "bitune": "Bitune", "bitune_causal": "Bitune, causal only"}
PAIRS = (("bitune", "lora"), ("bitune", "bitune_causal"), ("bitune_causal", "lora"))  # v2's; a config's COMPARISONS


def write_data(module) -> dict[str, list]:
    """Each order's (and each pilot K's) training JSONL; returns the held-out records per `(order, K)`."""
    tests = {}
    for order in module.ORDERS:
        for k in sorted({module.NUM_FACTS, *getattr(module, "PILOT_FACTS", ())}):
            train, test = two_hop.train_test_split(
                module.TRAIN_ITEMS, module.TEST_ITEMS, seed=module.DATA_SEED, order=order, num_facts=k
            )
            path = pathlib.Path(module.train_path(order, k))
            text = "".join(json.dumps({"messages": r.messages}, ensure_ascii=False) + "\n" for r in train)
            if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged bytes keep records valid
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            tests[(order, k)] = test
    return tests


def point_task(point: dict[str, Any]) -> tuple[str, int]:
    """`(order, K)` of a point, read back from its training file name (`train_{order}_k{K}.jsonl`)."""
    stem = pathlib.Path(point["data.train_path"]).stem  # train_reverse_k6
    _, order, k = stem.split("_")
    return order, int(k[1:])


def score_workdir(workdir: str | pathlib.Path, test: list, step: int | None = None) -> dict[str, Any]:
    """Per held-out item: correct, the gold's log-probability and the best other choice's, for the run's newest
    checkpoint (or `step`), scored through the mixed cache for a Bitune run; float32 with XLA attention, as every
    recorded point was scored."""
    model = restore_run(workdir, step, dtype="float32", attn_impl="xla")
    scores, _ = score_choices(model, [two_hop.to_mc_item(r) for r in test], SCORING)
    gold = [s.logprob_sum[s.label] for s in scores]
    other = [max(v for j, v in enumerate(s.logprob_sum) if j != s.label) for s in scores]
    return {
        "correct": [int(s.pred == s.label) for s in scores],
        "gold_logprob": gold,
        "best_other_logprob": other,
        "color_fact_slot": [r.meta["hop2_index"] for r in test],  # where the gold's color fact sits (recency)
    }


def loss_curve(workdir: str | pathlib.Path) -> dict[str, list]:
    """The trainer's logged step losses (`metrics.jsonl`, scope step): update and loss."""
    rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in rows if r.get("scope") == "step" and "loss" in r]
    return {"update": [int(r["step"]) for r in steps], "loss": [float(r["loss"]) for r in steps]}


def _arm(point: dict[str, Any]) -> str:
    return point_name(point).split("_seed")[0].rsplit("_", 1)[0]


def seed_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in summaries:
        items = s["final_eval_items"]
        order, k = point_task(s["point"])
        rows.append(
            {
                "name": point_name(s["point"]),
                "arm": _arm(s["point"]),
                "order": order,
                "num_facts": k,
                "seed": s["point"]["seed"],
                "accuracy": float(np.mean(items["correct"])),
                "items": len(items["correct"]),
                "updates": s["steps"],
                "final_loss": float(np.mean(items["loss_curve"]["loss"][-5:])) if items.get("loss_curve") else None,
                "alpha_k": s.get("alpha_k"),
                "alpha_v": s.get("alpha_v"),
            }
        )
    return rows


def arm_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof=1) over seeds per (order, arm)."""
    out = []
    for order in dict.fromkeys(r["order"] for r in rows):
        for arm in dict.fromkeys(r["arm"] for r in rows):
            mine = [r for r in rows if r["order"] == order and r["arm"] == arm]
            if not mine:
                continue
            acc = np.asarray([r["accuracy"] for r in mine])
            out.append(
                {
                    "order": order,
                    "arm": arm,
                    "mean": float(acc.mean()),
                    "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "seeds": {r["seed"]: r["accuracy"] for r in mine},
                    "final_loss": float(np.mean([r["final_loss"] for r in mine if r["final_loss"] is not None]))
                    if any(r["final_loss"] is not None for r in mine)
                    else None,
                }
            )
    return out


def pooled(
    summaries, arm_a: str, arm_b: str, order: str, seeds: set[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-item correctness of two arms on one order, stacked over the seeds both have (within `seeds` if given),
    with the seed per item."""
    by = {(_arm(s["point"]), point_task(s["point"])[0], s["point"]["seed"]): s for s in summaries}
    seeds = sorted(
        seed
        for (arm, o, seed) in by
        if arm == arm_a and o == order and (arm_b, order, seed) in by and (seeds is None or seed in seeds)
    )
    if not seeds:
        return None
    a = np.concatenate([by[(arm_a, order, s)]["final_eval_items"]["correct"] for s in seeds])
    b = np.concatenate([by[(arm_b, order, s)]["final_eval_items"]["correct"] for s in seeds])
    groups = np.concatenate([[s] * len(by[(arm_a, order, s)]["final_eval_items"]["correct"]) for s in seeds])
    return a, b, groups


def comparisons(summaries: list[dict[str, Any]], pairs=PAIRS) -> list[dict[str, Any]]:
    """Each `(a, b)` of `pairs` as a - b per order, pooled over the seeds both arms have; then, with both orders, the
    order interaction (a difference in reverse order minus the same in chain order, items paired across orders)
    over the seeds all four runs have. Each entry names its seeds: a study under way pools fewer for some."""
    out = []
    orders = list(dict.fromkeys(point_task(s["point"])[0] for s in summaries))
    for order in orders:
        for a, b in pairs:
            got = pooled(summaries, a, b, order)
            if got is not None:
                d = paired_bootstrap(got[0], got[1], groups=got[2])
                seeds = [int(s) for s in np.unique(got[2])]
                out.append({"comparison": f"{a} - {b}", "order": order, "seeds": seeds, **d.to_dict()})
    if {"reverse", "chain"} <= set(orders):
        for a, b in pairs:
            chain = pooled(summaries, a, b, "chain")
            rev = pooled(summaries, a, b, "reverse", set(np.unique(chain[2]).tolist())) if chain else None
            if rev is not None:
                chain = pooled(summaries, a, b, "chain", set(np.unique(rev[2]).tolist()))
                d = paired_bootstrap(rev[0] - rev[1], chain[0] - chain[1], groups=rev[2])
                seeds = [int(s) for s in np.unique(rev[2])]
                out.append(
                    {"comparison": f"({a} - {b}): reverse - chain", "order": "both", "seeds": seeds, **d.to_dict()}
                )
    return out


def markdown(table: list[dict[str, Any]], comp: list[dict[str, Any]], items: int) -> str:
    lines = [
        "| order | arm | held-out accuracy, mean ± std over seeds | per seed | final train loss |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for t in table:
        per_seed = ", ".join(f"{s}: {a:.3f}" for s, a in t["seeds"].items())
        loss = "-" if t["final_loss"] is None else f"{t['final_loss']:.3f}"
        lines.append(
            f"| {t['order']} | {ARM_NAMES.get(t['arm'], t['arm'])} | {t['mean']:.3f} ± {t['std']:.3f} | "
            f"{per_seed} | {loss} |"
        )
    lines += [
        "",
        f"Held-out accuracy: log-likelihood choice among 4 colors on {items} problems per run (chance 0.25).",
        "",
        "| comparison | order | seeds | difference | 95% paired bootstrap interval (within seed) | |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for c in comp:
        verdict = "resolved" if c["resolved"] else "unresolved"
        lines.append(
            f"| {c['comparison']} | {c['order']} | {', '.join(map(str, c['seeds']))} | {c['estimate']:+.3f} | "
            f"[{c['low']:+.3f}, {c['high']:+.3f}] | "
            f"{verdict} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    bars, alphas, losses = fig.subplots(1, 3)
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    orders = list(dict.fromkeys(r["order"] for r in rows))
    width = 0.8 / max(len(arms), 1)
    for j, arm in enumerate(arms):
        for i, order in enumerate(orders):
            acc = [r["accuracy"] for r in rows if r["arm"] == arm and r["order"] == order]
            if acc:
                x = i + (j - (len(arms) - 1) / 2) * width
                bars.bar(x, np.mean(acc), width, color=f"C{j}", alpha=0.6, label=ARM_NAMES.get(arm) if i == 0 else None)
                bars.scatter([x] * len(acc), acc, color="black", s=10, zorder=3)
    bars.axhline(0.25, color="gray", linewidth=0.8, linestyle=":")
    bars.set_xticks(range(len(orders)), orders)
    bars.set(ylabel="held-out accuracy", title="held-out accuracy\n(dots: seeds; dotted: chance)")
    bars.legend(fontsize=8)
    for r in rows:
        if r["alpha_k"] is not None:
            style = "-" if r["arm"] == "bitune" else "--"
            alphas.plot(np.ravel(r["alpha_k"]), style, color="C0" if r["order"] == "reverse" else "C1", alpha=0.6)
    alphas.axhline(0.5, color="gray", linewidth=0.8)
    alphas.set(
        xlabel="layer",
        ylabel="alpha_k (weight of the second stream)",
        title="mixing per layer\n(blue: reverse, orange: chain; dashed: causal only)",
    )
    for s in summaries:
        curve = (s.get("final_eval_items") or {}).get("loss_curve")
        if curve:
            j = arms.index(_arm(s["point"]))
            losses.plot(curve["update"], curve["loss"], color=f"C{j}", alpha=0.4, linewidth=0.8)
    losses.set(xlabel="update", ylabel="training loss", yscale="log", title="training loss\n(every run; colors: arms)")
    for ax in (bars, alphas, losses):
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def pilot_curve(workdir: pathlib.Path, test: list) -> dict[str, Any]:
    """Held-out accuracy at every checkpoint of a pilot run, and its training loss."""
    from bitune_jax.train.checkpointing import Checkpointer

    with Checkpointer(workdir / "checkpoints", async_save=False) as ckpt:
        steps = ckpt.all_steps()
    accuracy = {str(step): float(np.mean(score_workdir(workdir, test, step)["correct"])) for step in steps}
    return {"accuracy_by_update": accuracy, "items": len(test), "loss_curve": loss_curve(workdir)}


def pilot_report(module, config, out: pathlib.Path, tests) -> None:
    """The pilot runs (v2: plain LoRA, one run per K; v3: LoRA and Bitune at seed 42), each named by its workdir:
    held-out accuracy at every checkpoint (on the first `PILOT_ITEMS` held-out problems) and the training loss; with
    a `PILOT_GATE`, whether every curve has flattened."""
    pilot = module.get_pilot()
    n = getattr(module, "PILOT_ITEMS", 200)
    evaluate = lambda c, workdir: pilot_curve(workdir, tests[point_task({"data.train_path": c.data.train_path})][:n])
    summaries = run_points(config, pilot, record_dir=out / "pilot_points", evaluate=evaluate)
    curves = {point_name(p): s["final_eval_items"] for p, s in zip(pilot, summaries, strict=True)}
    updates = sorted({u for c in curves.values() for u in c["accuracy_by_update"]}, key=int)
    lines = ["| run | " + " | ".join(f"update {u}" for u in updates) + " | loss, last 50 updates |"]
    lines.append("| --- |" + " ---: |" * (len(updates) + 1))
    for name, c in curves.items():
        accs = " | ".join(f"{c['accuracy_by_update'][u]:.3f}" if u in c["accuracy_by_update"] else "-" for u in updates)
        last = max(c["loss_curve"]["update"])
        tail = [x for u, x in zip(c["loss_curve"]["update"], c["loss_curve"]["loss"], strict=True) if u > last - 50]
        lines.append(f"| {name} | {accs} | {np.mean(tail):.3f} |")
    lines += ["", f"Held-out accuracy on the first {n} test problems of each K (reverse order), chance 0.25."]
    gate = getattr(module, "PILOT_GATE", None)
    if gate is not None:
        flat = pilot_gate(curves, gate)
        lines += ["", f"Gate (the last two checkpoints within {gate} for every run): {flat}."]
    ceiling = getattr(module, "PILOT_CEILING", None)
    if ceiling is not None:
        baseline = point_name(pilot[0])
        verdict = pilot_ceiling(curves[baseline], ceiling)
        lines += [f"Ceiling ({baseline}'s last checkpoint at most {ceiling}): {verdict}."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "pilot.md").write_text("\n".join(lines) + "\n")
    (out / "pilot.json").write_text(json.dumps(curves, indent=2) + "\n")
    print("\n".join(lines))


def pilot_gate(curves: dict[str, dict[str, Any]], gate: float) -> str:
    """Whether every pilot curve has flattened: its last two checkpoints' accuracies differ by at most `gate`."""
    moves = {}
    for name, c in curves.items():
        acc = [c["accuracy_by_update"][u] for u in sorted(c["accuracy_by_update"], key=int)]
        # rounded: accuracies are counts over the items, and 0.98 - 0.95 is 0.030000000000000027 in floats
        moves[name] = round(abs(acc[-1] - acc[-2]), 9) if len(acc) > 1 else float("inf")
    detail = ", ".join(f"{name} {move:.3f}" for name, move in moves.items())
    return ("holds" if all(m <= gate for m in moves.values()) else "does not hold") + f" ({detail})"


def pilot_ceiling(curve: dict[str, Any], ceiling: float) -> str:
    """Whether the baseline's last checkpoint leaves room above it: at accuracy 1.0 no arm can beat it."""
    last = curve["accuracy_by_update"][max(curve["accuracy_by_update"], key=int)]
    return ("holds" if last <= ceiling else "does not hold") + f" ({last:.3f})"


def grid_evaluate(tests: dict[tuple[str, int], list]):
    """`evaluate(config, workdir)` for `run_points`: a trained run scored on its order's held-out problems, with its
    loss curve."""

    def evaluate(c, workdir):
        return {
            **score_workdir(workdir, tests[point_task({"data.train_path": c.data.train_path})]),
            "loss_curve": loss_curve(workdir),
        }

    return evaluate


def grid_report(
    config, sweep: list[dict[str, Any]], out: pathlib.Path, tests, run_missing: bool = True, pairs=PAIRS
) -> tuple[str, list[dict[str, Any]]]:
    """The grid's tables, intervals and figure from its records (`OUT/points`), running the points not recorded
    unless `run_missing=False`; a point still missing is listed (a report of a study under way). Returns the
    markdown and the per-(order, arm) table."""
    summaries = run_points(
        config, sweep, record_dir=out / "points", evaluate=grid_evaluate(tests), run_missing=run_missing
    )
    missing = missing_points(sweep, summaries)
    if not summaries:
        raise SystemExit(f"no grid point is recorded in {out / 'points'} yet; not run: {', '.join(missing)}")
    rows = seed_rows(summaries)
    table = arm_table(rows)
    comp = comparisons(summaries, pairs)
    text = markdown(table, comp, rows[0]["items"])
    if missing:
        text += "\n\n" + under_way(missing)
    report = {"rows": rows, "table": table, "comparisons": comp, "missing": missing, "config": config.to_dict()}
    write_report(out, text, report)
    plot(rows, summaries, out / "figure.png")
    return text, table


def main(argv):
    config, sweep = study_from_flags(argv, flags.FLAGS["config"])
    module = load_config_module(config_flags.get_config_filename(flags.FLAGS["config"]))
    out = pathlib.Path(flags.FLAGS.out)
    tests = write_data(module)
    if flags.FLAGS.pilot:
        pilot_report(module, config, out, tests)
        return
    if flags.FLAGS.only:
        run_points(
            config, select_points(sweep, flags.FLAGS.only), record_dir=out / "points", evaluate=grid_evaluate(tests)
        )
        return
    pairs = getattr(module, "COMPARISONS", PAIRS)
    text, table = grid_report(config, sweep, out, tests, run_missing=not flags.FLAGS.report_only, pairs=pairs)
    print(text)
    for t in table:
        print(f"held_out_accuracy_{t['arm']}_{t['order']}: {t['mean']:.4f}")


def _define_flags() -> None:
    """Flags are defined only when run as a script, so the studies' helpers import side by side (tests)."""
    config_flags.DEFINE_config_file("config", None, "a study config file (get_config and get_sweep)", lock_config=True)
    flags.DEFINE_string("out", "docs/bitune_study_v2", "where the records, tables and the figure go")
    flags.DEFINE_list("only", [], "run only these points (workdir names), write no report")
    flags.DEFINE_bool("pilot", False, "run the config's pilot (get_pilot) instead of the grid")
    flags.DEFINE_bool("report_only", False, "run nothing: report the recorded points, list the others")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
