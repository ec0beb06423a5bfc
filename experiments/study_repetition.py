"""The repetition study: run the fixed-budget grid, then write its table and figure.

    python -m experiments.study_repetition --config=experiments/configs/study_repetition_smollm2.py \\
        [--out=docs/repetition_study] [--config.train.lr=...]

Writes `results.md` (the table), `results.json` (every number behind it) and `figure.png` (held-out accuracy over
the budget, training token accuracy per epoch with the saturation epoch marked) into `--out`.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bitune_jax.train import saturation
from experiments.study import run_points, save_png, study_from_flags, two_panels, write_report

config_flags.DEFINE_config_file("config", None, "a study config file (get_config and get_sweep)", lock_config=True)
_OUT = flags.DEFINE_string("out", "docs/repetition_study", "where the table and the figure go")


def saturation_epoch(token_accuracy: list[float], rule: saturation.SaturationConfig) -> int | None:
    """The first epoch after which the saturation rule would have stopped the run (None: it never fires)."""
    for epoch in range(1, len(token_accuracy) + 1):
        decision = saturation.check_saturation(token_accuracy[:epoch], rule)
        if decision.stop:
            return epoch
    return None


def point_row(summary: dict[str, Any], rule: saturation.SaturationConfig) -> dict[str, Any]:
    """One grid point's numbers: held-out accuracy before, along and after training; token accuracy per epoch."""
    history = summary["history"]
    samples, epochs = summary["point"]["data.num_samples"], summary["point"]["train.epochs"]
    updates_per_epoch = summary["planned_updates"] / epochs
    token_acc = [h["token_accuracy"] for h in history]
    evals = [(e + 1, h) for e, h in enumerate(history) if "eval_avg@n" in h]
    start = summary["start_eval"]
    sat = saturation_epoch(token_acc, rule)
    return {
        "samples": samples,
        "epochs": epochs,
        "updates": summary["steps"],
        "held_out_start": start["eval_avg@n"],
        "held_out_final": evals[-1][1]["eval_avg@n"],
        "held_out_best": max(h["eval_avg@n"] for _, h in evals),
        "terminated_final": evals[-1][1]["eval_terminated_fraction"],
        "token_accuracy_final": token_acc[-1],
        "memorized_final": history[-1]["memorized_fraction"],
        "saturation_epoch": sat,
        "saturation_update": None if sat is None else int(sat * updates_per_epoch),
        "curve_updates": [0] + [int(e * updates_per_epoch) for e, _ in evals],
        "curve_held_out": [start["eval_avg@n"]] + [h["eval_avg@n"] for _, h in evals],
        "token_accuracy": token_acc,
    }


def markdown_table(rows: list[dict[str, Any]], items: int) -> str:
    fmt = lambda x: "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))
    lines = [
        "| samples x epochs | updates | held-out acc. before | held-out acc. final | held-out acc. best | "
        "final token acc. | memorized | saturation epoch (update) | terminated |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        sat = "-" if r["saturation_epoch"] is None else f"{r['saturation_epoch']} ({r['saturation_update']})"
        lines.append(
            f"| {r['samples']} x {r['epochs']} | {r['updates']} | {fmt(r['held_out_start'])} | "
            f"{fmt(r['held_out_final'])} | {fmt(r['held_out_best'])} | {fmt(r['token_accuracy_final'])} | "
            f"{fmt(r['memorized_final'])} | {sat} | {fmt(r['terminated_final'])} |"
        )
    se = math.sqrt(0.25 / items)
    lines.append("")
    lines.append(
        f"Held-out accuracy is greedy exact match of the last `\\boxed{{}}` on {items} test problems "
        f"(binomial standard error at most {se:.3f})."
    )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    fig, left, right = two_panels(12, 4.2)
    for r in rows:
        label = f"{r['samples']} x {r['epochs']}"
        left.plot(r["curve_updates"], r["curve_held_out"], marker="o", label=label)
        epochs = np.arange(1, len(r["token_accuracy"]) + 1)
        (line,) = right.plot(epochs, r["token_accuracy"], marker=".", label=label)
        if r["saturation_epoch"] is not None:
            e = r["saturation_epoch"]
            right.plot([e], [r["token_accuracy"][e - 1]], marker="*", markersize=14, color=line.get_color())
    left.set(xlabel="updates", ylabel="held-out accuracy", title="held-out accuracy over the update budget")
    right.set(
        xlabel="epoch",
        ylabel="training token accuracy",
        xscale="log",
        ylim=(0.0, 1.02),
        title="token accuracy per epoch (star: saturation epoch)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(title="samples x epochs", loc="best")
    return save_png(fig, path)


def main(argv):
    config, sweep = study_from_flags(argv, flags.FLAGS["config"])
    summaries = run_points(config, sweep)
    rule = saturation.SaturationConfig()  # the trainer's default rule, as the notebook uses
    rows = [point_row(s, rule) for s in summaries]
    table = markdown_table(rows, config.eval.num_items)
    out = write_report(_OUT.value, table, {"rows": rows, "config": config.to_dict()})
    plot(rows, out / "figure.png")
    print(table)
    for r in rows:
        print(f"held-out accuracy {r['samples']}x{r['epochs']}: {r['held_out_final']:.4f}")


if __name__ == "__main__":
    app.run(main)
