"""Greedy held-out accuracy of a finished repetition-v3 point at several numbers of edits per problem.

    python -m experiments.list_edits_difficulty_probe --lr 1e-4 [--trained 5-8] [--steps 3-5 4-6 5-8] [--problems 64]

Why: when the v3 pilot gate finds the one-epoch point above its avg@4 range, its lever is the number of edits
(docs/repetition_study_v3/PREREGISTRATION.md), and each try of a new difficulty costs a 512-update run and its
eval. This reads where the difficulty should go from the point already trained: its final weights (trained at the
study's first difficulty) decode held-out problems of each range greedily, the prompts and the scoring as the
study's eval (`HeldOutEval`). It measures how accuracy falls with the number of edits for a model trained at one
difficulty, not what a model trained at another would score: a guide for the choice, which the pilot's own run
then judges. Headline figures last, one `name: value` per line; `--out` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from bitune_jax.train.restore import restore_run
from experiments.configs import study_repetition_v3_smollm2 as v3
from experiments.list_edits_token_accuracy import edit_ranges
from experiments.repetition_v3 import greedy_eval
from experiments.study import point_config


def probe(model, lr: float, min_steps: int, max_steps: int, problems: int) -> dict:
    """The study's held-out eval of one difficulty (its first `problems`), one greedy sample each."""
    overrides = v3.point(*v3.DIAGONAL[0], lr, v3.DRAWS[0], (min_steps, max_steps))
    config = point_config(v3.get_config(), {**overrides, "eval.num_items": problems})
    _, records = greedy_eval(model, config)
    return {
        "steps": f"{min_steps}-{max_steps}",
        "problems": len(records),
        "greedy": float(np.mean([r.correct[0] for r in records])),
        "terminated": float(np.mean([r.terminated[0] for r in records])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, required=True, help="the point's learning rate (its workdir's name)")
    parser.add_argument("--trained", default="", help="the edits the point trained at (default: the first of EDITS)")
    parser.add_argument("--steps", nargs="+", default=["3-5", "4-6", "5-8", "6-9"], help="min-max edits per problem")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--out", default="", help="also write the figures here (JSON)")
    args = parser.parse_args()
    ranges = edit_ranges(parser, args.steps)
    trained = edit_ranges(parser, [args.trained])[0] if args.trained else None
    workdir = pathlib.Path(v3.point(*v3.DIAGONAL[0], args.lr, v3.DRAWS[0], trained)["workdir"])
    if not (workdir / "summary.json").exists():
        parser.error(f"{workdir} holds no finished run (summary.json): run the point first")
    model = restore_run(workdir)
    rows = [probe(model, args.lr, lo, hi, args.problems) for lo, hi in ranges]
    if args.out:
        command = f"python -m experiments.list_edits_difficulty_probe --lr {args.lr:g} --steps {' '.join(args.steps)}"
        command += f" --trained {args.trained}" if args.trained else ""
        record = {"command": f"{command} --problems {args.problems}", "workdir": str(workdir), "rows": rows}
        pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for r in rows:
        print(f"{r['steps']} edits: terminated {r['terminated']:.3f} of {r['problems']} problems")
    for r in rows:
        print(f"greedy_{r['steps']}: {r['greedy']:.4f}")


if __name__ == "__main__":
    main()
