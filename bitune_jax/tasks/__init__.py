"""The studies' synthetic tasks, generated here (no download), each with a test set disjoint from its training pool.

They live apart from `bitune_jax.data` (records, tokenization, batches: what every dataset goes through) because
each is one study's instrument: `arithmetic` and `list_edits` are the long-CoT tasks a run config names in
`data.synthetic.task` (`registry`), `two_hop` is the Bitune study's 2-hop lookups, scored as multiple choice, and
`list_edits_scoring` is the list-edits pilot gate's single-step scoring. `data` imports nothing from here.
"""

from bitune_jax.tasks import arithmetic, list_edits, list_edits_scoring, problem_stream, registry, two_hop
from bitune_jax.tasks.problem_stream import StepsTask
from bitune_jax.tasks.registry import TASKS, describe, split

__all__ = [
    "TASKS",
    "StepsTask",
    "arithmetic",
    "describe",
    "list_edits",
    "list_edits_scoring",
    "problem_stream",
    "registry",
    "split",
    "two_hop",
]
