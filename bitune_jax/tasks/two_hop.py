"""A synthetic Bitune probe generated here (no download): 2-hop lookups over a handful of facts, in two fact orders.

A problem (K = `num_facts` = 6): "Mia's favorite color is green. ... Mary's friend is Hal. ... What is the favorite
color of Mary's friend?", four single-token color choices, the gold alone as the answer, in the Bitune authors'
plain format. Two facts form the chain (hop 1 "S's friend is F.", hop 2 "F's favorite color is G."), the others
are distractors built so that surface shortcuts stay near chance; `order="reverse"` lists hop 2 before hop 1, where a
causal reader cannot tag the color fact while reading it and a bidirectional prompt pass can, `order="chain"` is the
control; both orders of one seed give the same problems, paired. The design (distractors, the shortcuts and their
accuracy, choices, the strings produced and scored, what it measures and what it does not) is in docs/tasks.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bitune_jax.data.records import Record, write_jsonl
from bitune_jax.data.tokenize import PLAIN_PROMPT
from bitune_jax.eval.datasets import MCItem

__all__ = [
    "generate",
    "mc_items",
    "to_mc_item",
    "train_test_split",
    "write_jsonl",
    "solve",
    "prompt_text",
    "user_message",
    "render_fact",
    "parse_facts",
    "NAMES",
    "COLORS",
    "QUESTION",
    "TEMPLATES",
    "ORDERS",
    "MIN_FACTS",
    "MAX_FACTS",
    "NUM_CHOICES",
]

ORDERS = ("reverse", "chain")
MIN_FACTS, MAX_FACTS = 4, 8
NUM_CHOICES = 4
# One token each after a space in the SmolLM2 tokenizer (checked when this list was written; also a test). Names
# that are also common words (Will, Mark, Rose, Ruby, Grace, Max, ...) and near-duplicates (Ann/Anna, Sara/Sarah)
# are left out.
NAMES = (
    "Mia",
    "Leo",
    "Noah",
    "Omar",
    "Ethan",
    "Kai",
    "Sam",
    "Maya",
    "Finn",
    "Owen",
    "Tara",
    "Anna",
    "Ben",
    "Tom",
    "Jack",
    "Alex",
    "Dan",
    "Paul",
    "Adam",
    "Luke",
    "Emma",
    "Lucy",
    "Amy",
    "Eva",
    "Rosa",
    "Ella",
    "Nina",
    "Ian",
    "Bob",
    "Cal",
    "Fay",
    "Hal",
    "Kate",
    "Meg",
    "Tim",
    "Hugo",
    "Alice",
    "Carl",
    "Emily",
    "Henry",
    "Jane",
    "John",
    "Mary",
    "Peter",
    "Sarah",
    "Tony",
    "Bill",
    "Jim",
    "Nick",
    "Fred",
)
# One token each after a space in the SmolLM2 tokenizer.
COLORS = (
    "red",
    "blue",
    "green",
    "yellow",
    "orange",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "silver",
)
FRIEND = "{x}'s friend is {y}."
COLOR = "{x}'s favorite color is {y}."
QUESTION = "What is the favorite color of {s}'s friend?"
TEMPLATES = {"friend": FRIEND, "color": COLOR}
_FACT = re.compile(r"^(\w+)'s (friend|favorite color) is (\w+)\.$")


def _check(order: str, num_facts: int) -> None:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(num_facts, bool) or not isinstance(num_facts, (int, np.integer)):
        raise ValueError(f"num_facts must be an integer in {MIN_FACTS}..{MAX_FACTS}, got {num_facts!r}")
    if not MIN_FACTS <= num_facts <= MAX_FACTS:
        raise ValueError(f"num_facts must be in {MIN_FACTS}..{MAX_FACTS}, got {num_facts}")


@dataclasses.dataclass(frozen=True)
class _Problem:
    """One drawn problem, before an order is chosen."""

    subject: str  # S
    bridge: str  # F
    gold: str  # G = F's color
    foil: str  # H = E's color, where D's friend is E
    foil_from: str  # D
    foil_via: str  # E
    foil2: str | None  # I = Q's color, where P's friend is Q (K >= 6): a second wrong-hop foil
    skip_hop: str | None  # J = S's color, when the problem has it (K >= 7)
    distractors: tuple[tuple[str, str, str], ...]  # (kind, x, y) in their slot order
    slots: tuple[int, int]  # p < q: where the two chain facts go
    choices: tuple[str, ...]

    @property
    def hop1(self) -> tuple[str, str, str]:
        return ("friend", self.subject, self.bridge)

    @property
    def hop2(self) -> tuple[str, str, str]:
        return ("color", self.bridge, self.gold)

    def facts(self, order: str) -> list[tuple[str, str, str]]:
        """The K facts in the order the prompt lists them: distractors in their slots, the chain in `order`."""
        first, second = (self.hop1, self.hop2) if order == "chain" else (self.hop2, self.hop1)
        rest = iter(self.distractors)
        p, q = self.slots
        k = len(self.distractors) + 2
        return [first if i == p else second if i == q else next(rest) for i in range(k)]


def _take(rng: np.random.Generator, pool: list[str]) -> str:
    """Remove and return a random element of `pool`."""
    return pool.pop(int(rng.integers(len(pool))))


def _draw(rng: np.random.Generator, num_facts: int) -> _Problem:
    people = list(NAMES)
    colors = list(COLORS)
    s, f, d, e = (_take(rng, people) for _ in range(4))
    gold, foil = _take(rng, colors), _take(rng, colors)
    distractors = [("friend", d, e), ("color", e, foil)]
    skip_hop = foil2 = None
    pairs: list[tuple[str, str]] = []
    for extra in range(num_facts - 4):
        if extra in (0, 3):  # a friend pair of two new people: (P, Q), then (R, T)
            pairs.append((_take(rng, people), _take(rng, people)))
            distractors.append(("friend", *pairs[-1]))
        elif extra == 1:  # Q's color: a second foil chain, P -> Q -> I
            foil2 = _take(rng, colors)
            distractors.append(("color", pairs[0][1], foil2))
        else:  # S's own color: the skip-hop answer
            skip_hop = _take(rng, colors)
            distractors.append(("color", s, skip_hop))
    order = rng.permutation(len(distractors))
    distractors = [distractors[i] for i in order]
    p, q = sorted(int(i) for i in rng.choice(num_facts, 2, replace=False))
    mentioned = [y for kind, _, y in distractors if kind == "color" and y not in (foil, skip_hop)]
    rng.shuffle(mentioned)
    unmentioned = list(colors)
    rng.shuffle(unmentioned)
    others = ([skip_hop] if skip_hop else []) + mentioned + unmentioned
    choices = [gold, foil, *others[: NUM_CHOICES - 2]]
    rng.shuffle(choices)
    return _Problem(s, f, gold, foil, d, e, foil2, skip_hop, tuple(distractors), (p, q), tuple(choices))


def render_fact(kind: str, x: str, y: str) -> str:
    return TEMPLATES[kind].format(x=x, y=y)


def user_message(facts: Sequence[Sequence[str]], subject: str, choices: Sequence[str], with_facts: bool = True) -> str:
    """The training record's user message: `"{facts} {question}\\n\\nChoices:\\n{one choice a line}"`
    (`with_facts=False`: the question alone, the no-facts guessing baseline)."""
    question = QUESTION.format(s=subject)
    text = " ".join([*(render_fact(*fact) for fact in facts), question]) if with_facts else question
    return f"{text}\n\nChoices:\n" + "\n".join(choices)


def prompt_text(meta: dict[str, Any], with_facts: bool = True) -> str:
    """The whole rendered prompt of a record's `meta`, as the plain training path and `AUTHORS_MC` both see it:
    `"Question: {user message}\\n\\nAnswer:"`."""
    facts = meta["facts"] if with_facts else []
    return PLAIN_PROMPT.format(instruction=user_message(facts, meta["subject"], meta["choices"], with_facts))


def solve(facts: Sequence[Sequence[str]], subject: str) -> str:
    """The color of `subject`'s friend, found from the facts alone; raises unless both hops are unique.

    "Friend" is read symmetrically: a fact "X's friend is S." also makes X a friend of S.
    """
    friends = [y for kind, x, y in facts if kind == "friend" and x == subject]
    friends += [x for kind, x, y in facts if kind == "friend" and y == subject]
    if len(friends) != 1:
        raise ValueError(f"{subject} has {len(friends)} friends in the facts, expected exactly one: {friends}")
    colors = [y for kind, x, y in facts if kind == "color" and x == friends[0]]
    if len(colors) != 1:
        raise ValueError(f"{friends[0]} has {len(colors)} favorite colors in the facts, expected exactly one")
    return colors[0]


def parse_facts(text: str) -> list[tuple[str, str, str]]:
    """`(kind, x, y)` for each fact sentence of a prompt's facts part ("... is Y. ... is C."); raises on others."""
    out = []
    for sentence in re.split(r"(?<=\.) ", text.strip()):
        m = _FACT.match(sentence)
        if m is None:
            raise ValueError(f"not a fact sentence: {sentence!r}")
        out.append(("friend" if m[2] == "friend" else "color", m[1], m[3]))
    return out


def _record(problem: _Problem, order: str, num_facts: int, source: str, line: int) -> Record:
    facts = problem.facts(order)
    user = user_message(facts, problem.subject, problem.choices)
    meta = {
        "task": "two_hop",
        "order": order,
        "num_facts": num_facts,
        "subject": problem.subject,
        "bridge": problem.bridge,
        "gold": problem.gold,
        "foil": problem.foil,
        "foil_from": problem.foil_from,
        "foil_via": problem.foil_via,
        "foil2": problem.foil2,
        "skip_hop": problem.skip_hop,
        "facts": [list(fact) for fact in facts],
        "hop1_index": facts.index(problem.hop1),
        "hop2_index": facts.index(problem.hop2),
        "choices": list(problem.choices),
        "label": problem.choices.index(problem.gold),
        "problem": _key(problem),
    }
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": problem.gold}]
    return Record(messages=messages, file=source, line=line, meta=meta)


def _key(problem: _Problem) -> str:
    """The problem's text in chain order: the same for both orders, so pairing and disjointness hold across them."""
    return user_message(problem.facts("chain"), problem.subject, problem.choices)


def _stream(
    seed: int | list[int], order: str, num_facts: int, exclude: frozenset[str] = frozenset(), source: str = "two_hop"
) -> Iterator[Record]:
    """Distinct problems, forever, in a fixed order for `seed` whatever `order`; problems in `exclude` skipped."""
    _check(order, num_facts)
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    line = 0
    while True:
        problem = _draw(rng, num_facts)
        key = _key(problem)
        if key in seen:
            continue
        seen.add(key)
        line += 1
        yield _record(problem, order, num_facts, source, line)


def generate(n: int, *, seed: int, order: str, num_facts: int = 6) -> list[Record]:
    """`n` distinct problems of `num_facts` facts (4..8) in `order` ("reverse" or "chain"); `generate(n)` is a prefix
    of `generate(m > n)`, and the same `seed` and `num_facts` give the same problems in both orders, index by index.

    `meta`: `order`, `num_facts`, `subject` (S), `bridge` (F), `gold` (G), `foil` (H, the wrong-hop color, of
    `foil_via` E, where `foil_from` D's friend is E), `foil2` (I, the second foil chain's color, or None), `skip_hop`
    (S's color or None), `facts` ([kind, x, y] in the
    listed order), `hop1_index`, `hop2_index` (where the chain facts are in `facts`), `choices`, `label`, and
    `problem` (the chain-order text, the same for both orders).
    """
    _check(order, num_facts)
    stream = _stream(seed, order, num_facts, source=f"<two_hop seed={seed} order={order} k={num_facts}>")
    return list(itertools.islice(stream, n))


def train_test_split(
    n_train: int, n_test: int, *, seed: int, order: str, num_facts: int = 6, test_order: str | None = None
) -> tuple[list[Record], list[Record]]:
    """A training pool and a test set that share no problem (in either order's text).

    The test set depends only on `(seed, n_test, num_facts)` and its order (`test_order`, default `order`); the pool
    is a stream that skips test problems, so a larger `n_train` extends the pool without changing its first
    entries. Either order of the same arguments gives the same problems, paired.
    """
    test_order = order if test_order is None else test_order
    _check(order, num_facts)
    _check(test_order, num_facts)
    test_source = f"<two_hop test seed={seed} order={test_order} k={num_facts}>"
    test = list(itertools.islice(_stream([seed, 1], test_order, num_facts, source=test_source), n_test))
    exclude = frozenset(r.meta["problem"] for r in test)
    source = f"<two_hop train seed={seed} order={order} k={num_facts}>"
    pool = _stream([seed, 0], order, num_facts, exclude, source=source)
    return list(itertools.islice(pool, n_train)), test


def to_mc_item(record: Record, with_facts: bool = True) -> MCItem:
    """The record as an `MCItem` for `score_choices(model, items, AUTHORS_MC)`: its `question` is the whole rendered
    training prompt (`with_facts=False`: without the facts), its choices the colors, its label the gold's index."""
    meta = record.meta
    return MCItem(
        question=prompt_text(meta, with_facts),
        choices=tuple(meta["choices"]),
        label=meta["label"],
        file=record.file,
        line=record.line,
        meta=dict(meta),
    )


def mc_items(n: int, *, seed: int, order: str, num_facts: int = 6, with_facts: bool = True) -> list[MCItem]:
    """`generate(...)`'s problems as `MCItem`s (`to_mc_item`), same seed, same problems, same order."""
    return [to_mc_item(r, with_facts) for r in generate(n, seed=seed, order=order, num_facts=num_facts)]
