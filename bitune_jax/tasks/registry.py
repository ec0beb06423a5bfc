"""The synthetic tasks a run config names in `data.synthetic.task`: each is generated here, with a disjoint test set.

`arithmetic` (`arithmetic.py`) is the embedded default's long-CoT task; `list_edits` (`list_edits.py`) is list-state
tracking, whose single steps a small model can learn first, so that repetition SFT shapes the trace, not the skill.
Both split a run's `data.synthetic` section the same way (`problem_stream.StepsTask.split`).
"""

from __future__ import annotations

from bitune_jax.data.records import Record
from bitune_jax.tasks import arithmetic, list_edits
from bitune_jax.tasks.problem_stream import StepsTask

TASKS: dict[str, StepsTask] = {"arithmetic": arithmetic.TASK, "list_edits": list_edits.TASK}
DESCRIPTIONS = {"arithmetic": "arithmetic", "list_edits": "list-state tracking"}


def split(spec) -> tuple[list[Record], list[Record]]:
    """`(training pool, disjoint test set)` of the task `spec.task` names (a run config's `data.synthetic`)."""
    if spec.task not in TASKS:
        raise ValueError(f"data.synthetic.task must be one of {sorted(TASKS)}, got {spec.task!r}")
    return TASKS[spec.task].split(spec)


def describe(spec) -> str:
    kind = "long-CoT" if spec.cot else "short-answer"
    return f"synthetic {kind} {DESCRIPTIONS[spec.task]} (pool {spec.pool_size}, seed {spec.seed})"
