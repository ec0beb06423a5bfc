"""What a finished run reports (`workdir/summary.json`, and `run`'s return value): a pure function of its progress,
plan and final weights, so the numbers a study reads are assembled in one place."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bitune_jax.bitune import alpha
from bitune_jax.train import saturation
from bitune_jax.train.objectives import Objective
from bitune_jax.train.progress import Progress


def mixing_alphas(trainable: Any, objective: Objective, per_layer: bool) -> dict[str, Any]:
    """Bitune's learned mixing coefficients: their means (the step log) or one per layer (the summary); empty for
    any other objective."""
    if objective.kind != "bitune" or "mix" not in trainable:
        return {}
    out = {}
    for name in ("k", "v"):
        a = np.asarray(jax.device_get(alpha(trainable["mix"][f"w_{name}"], objective.bitune.tau)))
        out[f"alpha_{name}" if per_layer else f"alpha_{name}_mean"] = a.tolist() if per_layer else float(a.mean())
    return out


def run_summary(
    progress: Progress,
    *,
    final_step: int,
    accumulate: int,
    total_updates: int,
    saturation_mode: str,
    truncation: str,
    checkpoint_dir: str,
    alphas: dict[str, Any],
) -> dict[str, Any]:
    """The summary of a run that stopped after `final_step` steps (`accumulate` steps per update)."""
    saturated = progress.saturated
    return {
        "steps": final_step,
        "updates": final_step // accumulate,
        "epochs": len(progress.history),
        "planned_updates": total_updates,
        "final_token_accuracy": progress.history[-1]["token_accuracy"] if progress.history else None,
        "saturation": None
        if saturated is None
        else {
            **saturated,
            "mode": saturation_mode,
            "anneal": progress.anneal,
            "updates_saved": saturation.updates_saved(total_updates, -(-final_step // accumulate)),
        },
        "history": progress.history,
        "start_eval": progress.start_eval or None,
        "truncation": truncation,
        "checkpoint_dir": checkpoint_dir,
        "rollbacks": list(progress.recovery.rollbacks),
        **alphas,
    }
