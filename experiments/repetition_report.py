"""The repetition study's report: its tables (`results.md`) and figure, from the per-point rows and comparisons
`study_repetition` computes; and the two slices of the grid both read (the fixed budget and the fixed-n row)."""

from __future__ import annotations

import collections
import pathlib
from typing import Any

import numpy as np

from bitune_jax.eval.intervals import Difference
from bitune_jax.train import saturation
from experiments.study import save_png, two_panels

METRICS = ("token_accuracy", "sample_token_accuracy")


def saturation_epoch(accuracy: list[float], rule: saturation.SaturationConfig) -> int | None:
    """The first epoch after which the saturation rule would have stopped the run (None: it never fires)."""
    for epoch in range(1, len(accuracy) + 1):
        if saturation.check_saturation(accuracy[:epoch], rule).stop:
            return epoch
    return None


def fixed_budget(rows: list[dict[str, Any]]) -> int:
    """The diagonal's update budget: the count most points share (the fixed-n row's longest point may spend more)."""
    counts = collections.Counter(r["updates"] for r in rows)
    return max(counts, key=lambda u: (counts[u], u))


def fixed_n_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points that share the most common sample count (ties: the smaller count), by epochs."""
    counts = collections.Counter(r["samples"] for r in rows)
    n = max(counts, key=lambda k: (counts[k], -k))
    return sorted((r for r in rows if r["samples"] == n), key=lambda r: r["epochs"])


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown_tables(rows: list[dict[str, Any]], comp: dict[str, Any], lr_rows: list[dict[str, Any]]) -> str:
    lines = [
        "| samples x epochs | updates | held-out acc. (± s.e.) | steps right before the first error | terminated | "
        "mean length | final token acc. | final sample token acc. | memorized | saturation epoch: token / sample |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        sat = " / ".join(_fmt(r[f"saturation_epoch_{m}"]) for m in METRICS)
        lines.append(
            f"| {r['samples']} x {r['epochs']} | {r['updates']} | {r['held_out_final']:.3f} ± {r['held_out_se']:.3f} | "
            f"{_fmt(r['steps_right_fraction'])} | {_fmt(r['terminated_final'])} | {_fmt(r['mean_length_final'])} | "
            f"{_fmt(r['token_accuracy_final'])} | {_fmt(r['sample_token_accuracy_final'])} | "
            f"{_fmt(r['memorized_final'])} | {sat} |"
        )
    items = rows[0]["held_out_items"] if rows else 0
    lines += [
        "",
        f"Held-out accuracy: greedy exact match of the last `\\boxed{{}}` on {items} test problems; steps right: "
        "the mean fraction of a problem's edits whose restated list is right before the trace's first wrong one. "
        "Saturation "
        "epoch: where the trainer's default rule (accuracy >= 0.99, or < 0.001 gain over 3 epochs) would have "
        "stopped, replayed on the epoch token accuracy over all answer tokens / the mean of each sample's own.",
    ]
    pairs = [("fixed budget", x) for x in comp["fixed_budget"]] + [("fixed n", x) for x in comp["fixed_n"]]
    if comp["best_repetition"]:
        pairs.append(("best repetition point", comp["best_repetition"]))
    if pairs:
        lines += [
            "",
            "| comparison | difference in held-out acc. | 95% paired bootstrap interval | |",
            "| --- | ---: | ---: | --- |",
        ]
        for kind, x in pairs:
            verdict = "resolved" if x["resolved"] else "unresolved"
            lines.append(
                f"| {kind}: {x['point']} - {x['against']} | {x['estimate']:+.3f} | "
                f"[{x['low']:+.3f}, {x['high']:+.3f}] | {verdict} |"
            )
        lines.append("")
        lines.append(
            "The best repetition point is picked by its own held-out accuracy, so its interval is optimistic "
            "(a selection among the repeated points)."
        )
    judgement = comp.get("fixed_n_judgement")
    if judgement:
        lines.append("")
        for metric, j in judgement["by_metric"].items():
            if j["saturated_point"] is None:
                lines.append(f"Fixed-n row, {metric}: no point reaches {judgement['threshold']}.")
                continue
            for outcome, o in j["by_outcome"].items():
                later = ", ".join(f"{x['point']} {Difference(**_diff_fields(x)).describe()}" for x in o["later"])
                lines.append(
                    f"Fixed-n row, {metric}: {j['saturated_point']} reaches {judgement['threshold']}; with more "
                    f"epochs, {outcome}: {o['verdict']}" + (f" ({later} against it)." if later else ".")
                )
    if lr_rows:
        lines += [
            "",
            "Learning-rate pick (the one-epoch point):",
            "",
            "| lr | held-out acc. (± s.e.) | final token acc. | terminated |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for r in sorted(lr_rows, key=lambda r: r["lr"]):
            lines.append(
                f"| {r['lr']:g} | {r['held_out_final']:.3f} ± {r['held_out_se']:.3f} | "
                f"{_fmt(r['token_accuracy_final'])} | {_fmt(r['terminated_final'])} |"
            )
    return "\n".join(lines)


def _diff_fields(x: dict[str, Any]) -> dict[str, Any]:
    return {k: x[k] for k in ("estimate", "low", "high", "confidence", "items")}


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> pathlib.Path:
    fig, left, right = two_panels(12, 4.2)
    budget = fixed_budget(rows)
    row_n = fixed_n_row(rows)
    for label, group in (
        (f"fixed budget ({budget} updates)", [r for r in rows if r["updates"] == budget]),
        (f"fixed n ({row_n[0]['samples']} samples)", row_n),
    ):
        group = sorted(group, key=lambda r: r["epochs"])
        if len(group) > 1:
            left.errorbar(
                [r["epochs"] for r in group],
                [r["held_out_final"] for r in group],
                yerr=[1.96 * r["held_out_se"] for r in group],
                marker="o",
                capsize=3,
                label=label,
            )
    for r in rows:
        epochs = np.arange(1, len(r["token_accuracy"]) + 1)
        (line,) = right.plot(epochs, r["token_accuracy"], marker=".", label=f"{r['samples']} x {r['epochs']}")
        if r["sample_token_accuracy"]:
            right.plot(epochs, r["sample_token_accuracy"], linestyle=":", color=line.get_color())
        e = r["saturation_epoch_token_accuracy"]
        if e is not None:
            right.plot([e], [r["token_accuracy"][e - 1]], marker="*", markersize=14, color=line.get_color())
    left.set(xlabel="epochs", ylabel="held-out accuracy (95% binomial)", xscale="log", title="held-out accuracy")
    left.set_xscale("log", base=2)
    right.set(
        xlabel="epoch",
        ylabel="training token accuracy",
        xscale="log",
        title="token accuracy per epoch (dotted: per-sample mean; star: saturation)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    return save_png(fig, path)
