"""The Bitune study: Bitune vs the single-LoRA baseline over seeds, then its table and figure.

    python -m experiments.study_bitune --config=experiments/configs/study_bitune_smollm2.py \\
        [--out=docs/bitune_study] [--config.train.max_updates=...]

Writes `results.md` (mean and spread per arm, every seed), `results.json` and `figure.png` (held-out accuracy per
arm and seed; Bitune's learned mixing coefficients per layer) into `--out`.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.study import run_points, save_png, study_from_flags, two_panels, write_report

config_flags.DEFINE_config_file("config", None, "a study config file (get_config and get_sweep)", lock_config=True)
_OUT = flags.DEFINE_string("out", "docs/bitune_study", "where the table and the figure go")
ARM_NAMES = {"peft": "LoRA (baseline)", "bitune": "Bitune"}


def seed_row(summary: dict[str, Any]) -> dict[str, Any]:
    final = summary["history"][-1]
    return {
        "arm": ARM_NAMES[summary["point"]["objective"]],
        "seed": summary["point"]["seed"],
        "held_out": final["eval_avg@n"],
        "train_loss_last_epoch": final["loss"],
        "token_accuracy_last_epoch": final["token_accuracy"],
        "updates": summary["steps"],
        "alpha_k": summary.get("alpha_k"),
        "alpha_v": summary.get("alpha_v"),
    }


def arm_stats(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) of held-out accuracy per arm."""
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        acc = np.asarray([r["held_out"] for r in rows if r["arm"] == arm])
        out[arm] = {
            "mean": float(acc.mean()),
            "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "seeds": len(acc),
        }
    return out


def markdown_table(rows: list[dict[str, Any]], items: int) -> str:
    stats = arm_stats(rows)
    lines = [
        "| arm | held-out accuracy, mean ± std | per seed | train loss (last epoch) |",
        "| --- | ---: | --- | ---: |",
    ]
    for arm, s in stats.items():
        mine = [r for r in rows if r["arm"] == arm]
        per_seed = ", ".join(f"{r['seed']}: {r['held_out']:.3f}" for r in mine)
        loss = np.mean([r["train_loss_last_epoch"] for r in mine])
        lines.append(f"| {arm} | {s['mean']:.3f} ± {s['std']:.3f} | {per_seed} | {loss:.3f} |")
    lines.append("")
    lines.append(
        f"Held-out accuracy: greedy exact match of the last `\\boxed{{}}` on {items} test problems; std over "
        f"seeds with ddof=1."
    )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    fig, left, right = two_panels(11, 4)
    stats = arm_stats(rows)
    arms = list(stats)
    left.bar(
        range(len(arms)),
        [stats[a]["mean"] for a in arms],
        yerr=[stats[a]["std"] for a in arms],
        capsize=6,
        color=["tab:gray", "tab:blue"][: len(arms)],
        alpha=0.6,
    )
    for i, arm in enumerate(arms):
        accs = [r["held_out"] for r in rows if r["arm"] == arm]
        left.scatter([i] * len(accs), accs, color="black", zorder=3, s=14)
    left.set_xticks(range(len(arms)), arms)
    left.set(ylabel="held-out accuracy", title="mean ± std over seeds (dots: seeds)")
    for r in rows:
        if r["alpha_k"] is not None:
            layers = np.arange(len(np.ravel(r["alpha_k"])))
            right.plot(layers, np.ravel(r["alpha_k"]), color="tab:blue", alpha=0.7, label=f"K, seed {r['seed']}")
            right.plot(
                layers,
                np.ravel(r["alpha_v"]),
                color="tab:orange",
                alpha=0.7,
                linestyle="--",
                label=f"V, seed {r['seed']}",
            )
    right.axhline(0.5, color="gray", linewidth=0.8)
    right.set(
        xlabel="layer",
        ylabel="alpha (weight of the bidirectional stream)",
        ylim=(0.0, 1.0),
        title="Bitune's learned mixing coefficients (start: 0.5)",
    )
    right.legend(fontsize=7, ncol=3)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def main(argv):
    config, sweep = study_from_flags(argv, flags.FLAGS["config"])
    rows = [seed_row(s) for s in run_points(config, sweep)]
    table = markdown_table(rows, config.eval.num_items)
    out = write_report(_OUT.value, table, {"rows": rows, "stats": arm_stats(rows), "config": config.to_dict()})
    plot(rows, out / "figure.png")
    print(table)
    for arm, s in arm_stats(rows).items():
        print(f"held-out accuracy {arm}: {s['mean']:.4f} +- {s['std']:.4f}")


if __name__ == "__main__":
    app.run(main)
