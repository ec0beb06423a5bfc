"""The 2-hop lookup task: a unique 2-hop answer, the foils, paired fact orders, one-token choices, split hygiene."""

import collections
import re

import pytest

from bitune_jax.checkpoints.gguf_file import locate_packaged_gguf, open_gguf
from bitune_jax.checkpoints.gguf_tokenizer import tokenizer_from_gguf
from bitune_jax.data import read_jsonl
from bitune_jax.data.tokenize import plain_prompt_answer
from bitune_jax.eval import AUTHORS_MC
from bitune_jax.eval.multiple_choice import encode_item
from bitune_jax.tasks.two_hop import (
    COLORS,
    MAX_FACTS,
    MIN_FACTS,
    NAMES,
    NUM_CHOICES,
    generate,
    mc_items,
    parse_facts,
    solve,
    to_mc_item,
    train_test_split,
    write_jsonl,
)

KS = range(MIN_FACTS, MAX_FACTS + 1)
# Parsed here, independently of the module: the user message's facts, the question, the listed choices.
USER = re.compile(
    r"^(?P<facts>.*) What is the favorite color of (?P<subject>\w+)'s friend\?\n\nChoices:\n(?P<choices>.*)$", re.S
)
FACT = re.compile(r"(\w+)'s (friend|favorite color) is (\w+)\.")


def _parse(record):
    """(facts as (relation, x, y) in text order, subject, choices) read back from the prompt text."""
    m = USER.match(record.messages[0]["content"])
    assert m is not None, record.messages[0]["content"]
    facts = FACT.findall(m["facts"])
    assert " ".join(f"{x}'s {rel} is {y}." for x, rel, y in facts) == m["facts"]  # nothing else in the facts part
    return facts, m["subject"], m["choices"].split("\n")


def _records(order, k, n=60, seed=0):
    return generate(n, seed=seed, order=order, num_facts=k)


@pytest.mark.parametrize("order", ["reverse", "chain"])
@pytest.mark.parametrize("k", KS)
def test_gold_is_reachable_by_the_two_hop_chain_and_no_other(order, k):
    for r in _records(order, k):
        facts, subject, choices = _parse(r)
        assert len(facts) == k
        friend_facts = [(x, y) for x, rel, y in facts if rel == "friend"]
        colors = collections.defaultdict(list)
        for x, rel, y in facts:
            if rel == "favorite color":
                colors[x].append(y)
        assert all(len(c) == 1 for c in colors.values())  # one color per person
        in_friend_facts = [p for pair in friend_facts for p in pair]
        assert len(in_friend_facts) == len(set(in_friend_facts))  # at most one friend fact per person
        # hop 1, friendship read both ways: S has exactly one friend
        friends = [y for x, y in friend_facts if x == subject] + [x for x, y in friend_facts if y == subject]
        assert len(friends) == 1
        bridge = friends[0]
        gold = colors[bridge][0]  # hop 2
        assert r.response == gold == r.meta["gold"] and bridge == r.meta["bridge"] and subject == r.meta["subject"]
        # no other route: nobody else has the gold color, and S's own color (1 hop) is not it
        assert [p for p, c in colors.items() if c[0] == gold] == [bridge]
        assert colors.get(subject, [None])[0] != gold
        # both kinds of distractor, and the bridge is not identifiable as the only colored person in a friend fact
        assert sum(rel == "friend" for _, rel, _ in facts) >= 2 and sum(rel != "friend" for _, rel, _ in facts) >= 2
        assert len([p for p in in_friend_facts if p in colors]) >= 2
        assert solve(parse_facts(r.messages[0]["content"].split(" What is")[0]), subject) == gold


def test_solve_raises_unless_both_hops_are_unique():
    facts = [("friend", "Mia", "Leo"), ("color", "Leo", "red")]
    assert solve(facts, "Mia") == "red"
    with pytest.raises(ValueError, match="2 friends"):
        solve([*facts, ("friend", "Tom", "Mia")], "Mia")  # Tom's friend is Mia: Mia's friend too
    with pytest.raises(ValueError, match="0 friends"):
        solve(facts, "Tom")
    with pytest.raises(ValueError, match="2 favorite colors"):
        solve([*facts, ("color", "Leo", "blue")], "Mia")
    with pytest.raises(ValueError, match="not a fact"):
        parse_facts("Mia's friend is Leo. Leo likes red.")


@pytest.mark.parametrize("k", KS)
def test_foils_are_the_wrong_hop_and_skip_hop_answers(k):
    for r in _records("reverse", k):
        facts, subject, choices = _parse(r)
        meta = r.meta
        d, e, foil = meta["foil_from"], meta["foil_via"], meta["foil"]
        assert (d, "friend", e) in facts and (e, "favorite color", foil) in facts
        assert subject not in (d, e) and meta["bridge"] not in (d, e)
        assert foil != r.response and foil in choices
        # the second foil chain P -> Q -> I (K >= 6): Q's friend-partner is neither S nor D
        chains = [
            (x, y, c) for x, rel, y in facts if rel == "friend" for q, rel2, c in facts if rel2 != "friend" and q == y
        ]
        others = [c for x, _, c in chains if x not in (subject, d)]
        assert others == ([meta["foil2"]] if k >= 6 else []) and meta["foil2"] in [*choices, None]
        skip = [y for x, rel, y in facts if rel == "favorite color" and x == subject]
        if k >= 7:
            assert skip == [meta["skip_hop"]] and meta["skip_hop"] in choices
        else:
            assert skip == [] and meta["skip_hop"] is None


@pytest.mark.parametrize("k, fact_colors, after_friend_is", [(4, 2, 2), (5, 2, 2), (6, 3, 3), (7, 4, 3), (8, 4, 3)])
def test_surface_shortcuts_stay_at_the_documented_floors(k, fact_colors, after_friend_is):
    """How many choices each shortcut leaves: "a color of the facts", "the color of someone after 'friend is'"."""
    for r in _records("chain", k):
        facts, _, choices = _parse(r)
        colors = {x: y for x, rel, y in facts if rel == "favorite color"}
        objects = {y for _, rel, y in facts if rel == "friend"}
        assert sum(c in colors.values() for c in choices) == fact_colors
        assert sum(colors.get(p) in choices for p in objects) == after_friend_is


@pytest.mark.parametrize("k", KS)
def test_orders_differ_only_by_swapping_the_two_chain_facts(k):
    rev, chain = _records("reverse", k), _records("chain", k)
    gaps = set()
    for a, b in zip(rev, chain, strict=True):
        fa, sa, ca = _parse(a)
        fb, sb, cb = _parse(b)
        assert (sa, ca, a.response) == (sb, cb, b.response)
        assert a.meta["problem"] == b.meta["problem"]
        hop1 = (sa, "friend", a.meta["bridge"])
        hop2 = (a.meta["bridge"], "favorite color", a.response)
        i1, i2 = fa.index(hop1), fa.index(hop2)
        assert i2 < i1  # reverse: the fact needed second comes first
        assert (fb.index(hop1), fb.index(hop2)) == (i2, i1)  # chain: the same two slots, the other way round
        swapped = list(fa)
        swapped[i1], swapped[i2] = swapped[i2], swapped[i1]
        assert swapped == fb  # everything else in place
        assert (a.meta["hop1_index"], a.meta["hop2_index"]) == (i1, i2)
        assert (b.meta["hop1_index"], b.meta["hop2_index"]) == (i2, i1)
        gaps.add(i1 - i2)
    assert len(gaps) > 1  # the gap between the hops varies


@pytest.mark.parametrize("k", KS)
def test_fact_positions_are_random(k):
    """Every fact slot holds each chain fact sometimes, and the foil chain comes in both of its orders."""
    slots1, slots2, foil_orders = set(), set(), set()
    for r in _records("chain", k, n=200):
        facts, _, _ = _parse(r)
        slots1.add(r.meta["hop1_index"])
        slots2.add(r.meta["hop2_index"])
        d, e = r.meta["foil_from"], r.meta["foil_via"]
        foil_orders.add(facts.index((d, "friend", e)) < facts.index((e, "favorite color", r.meta["foil"])))
    assert slots1 == set(range(k - 1)) and slots2 == set(range(1, k))  # chain order: hop 1 before hop 2
    assert foil_orders == {True, False}


@pytest.mark.parametrize("k", KS)
def test_choices_are_distinct_colors_and_the_label_points_at_the_gold(k):
    labels = collections.Counter()
    for r in _records("chain", k, n=200):
        facts, _, choices = _parse(r)
        assert len(choices) == NUM_CHOICES == len(set(choices)) and set(choices) <= set(COLORS)
        assert choices == r.meta["choices"] and choices[r.meta["label"]] == r.response
        mentioned = {y for _, rel, y in facts if rel == "favorite color"}
        assert len(set(choices) & mentioned) == min(NUM_CHOICES, len(mentioned))  # fact colors first
        labels[r.meta["label"]] += 1
    assert set(labels) == set(range(NUM_CHOICES)) and min(labels.values()) > 25  # shuffled, no position bias


def test_names_and_colors_are_single_tokens_in_smollm2():
    tok = tokenizer_from_gguf(open_gguf(locate_packaged_gguf("smollm2-135m-instruct")))
    for word in (*NAMES, *COLORS):
        assert len(tok.encode(" " + word, add_bos=False)) == 1, word
    # Scored as the plain training path tokenizes: the same prompt after AUTHORS_MC's forced BOS (SmolLM2 adds no
    # BOS of its own), and the gold's one-token continuation is the training answer without its EOS.
    for r in generate(20, seed=3, order="reverse"):
        item = to_mc_item(r)
        enc = encode_item(tok, item, AUTHORS_MC)
        prompt, answer = plain_prompt_answer(tok, r.messages, r.where)
        assert tok.add_bos is False and enc.prompt == [tok.bos_id, *prompt]
        assert all(len(c) == 1 for c in enc.continuations)
        assert enc.continuations[item.label] == answer[:-1] and answer[-1] == tok.eos_ids[0]


@pytest.mark.parametrize("order", ["reverse", "chain"])
def test_mc_prompt_is_the_training_prompt(order, tok_bos):
    records = generate(30, seed=5, order=order, num_facts=7)
    items = mc_items(30, seed=5, order=order, num_facts=7)
    for r, item in zip(records, items, strict=True):
        assert item.question == f"Question: {r.messages[0]['content']}\n\nAnswer:"
        assert AUTHORS_MC.template.format(question=item.question) == item.question
        assert item.choices[item.label] == r.response and item.meta["order"] == order
        # token level, with a tokenizer that adds BOS as AUTHORS_MC does: identical prompt, gold = answer - EOS
        enc = encode_item(tok_bos, item, AUTHORS_MC)
        prompt, answer = plain_prompt_answer(tok_bos, r.messages, r.where)
        assert enc.prompt == prompt and enc.continuations[item.label] == answer[:-1]
        assert enc.texts == [" " + c for c in item.choices]


def test_no_facts_prompt_is_the_question_alone():
    for r in generate(10, seed=1, order="reverse"):
        item = to_mc_item(r, with_facts=False)
        _, subject, choices = _parse(r)
        listed = "\n".join(choices)
        question = f"What is the favorite color of {subject}'s friend?"
        assert item.question == f"Question: {question}\n\nChoices:\n{listed}\n\nAnswer:"
        assert (item.choices, item.label) == (to_mc_item(r).choices, to_mc_item(r).label)


def test_generate_is_a_deterministic_stream_of_distinct_problems():
    a = generate(50, seed=7, order="reverse", num_facts=6)
    assert [r.messages for r in generate(20, seed=7, order="reverse", num_facts=6)] == [r.messages for r in a[:20]]
    assert [r.messages for r in generate(50, seed=7, order="reverse", num_facts=6)] == [r.messages for r in a]
    assert len({r.messages[0]["content"] for r in a}) == 50
    b = generate(50, seed=8, order="reverse", num_facts=6)
    assert {r.messages[0]["content"] for r in a}.isdisjoint(r.messages[0]["content"] for r in b)


def test_train_test_split_is_disjoint_nested_and_paired():
    train, test = train_test_split(300, 100, seed=0, order="reverse")
    assert (len(train), len(test)) == (300, 100)
    keys = lambda rs: {r.meta["problem"] for r in rs}  # noqa: E731
    texts = lambda rs: {r.messages[0]["content"] for r in rs}  # noqa: E731
    assert keys(train).isdisjoint(keys(test)) and texts(train).isdisjoint(texts(test))
    assert len(keys(train)) == 300 and len(keys(test)) == 100
    bigger, test2 = train_test_split(500, 100, seed=0, order="reverse")
    assert [r.messages for r in bigger[:300]] == [r.messages for r in train]  # a larger pool extends the smaller
    assert [r.messages for r in test2] == [r.messages for r in test]
    # the other order: the same problems, and still no test problem's text in the pool, in either order
    train_c, test_c = train_test_split(300, 100, seed=0, order="chain")
    assert [r.meta["problem"] for r in train_c] == [r.meta["problem"] for r in train]
    assert [r.meta["problem"] for r in test_c] == [r.meta["problem"] for r in test]
    assert texts(train).isdisjoint(texts(test_c)) and texts(train_c).isdisjoint(texts(test))
    _, mixed_test = train_test_split(10, 100, seed=0, order="reverse", test_order="chain")
    assert [r.messages for r in mixed_test] == [r.messages for r in test_c]


def test_records_round_trip_through_jsonl(tmp_path):
    records = generate(5, seed=0, order="chain", num_facts=8)
    back = read_jsonl(write_jsonl(records, tmp_path / "two_hop.jsonl"))
    assert [r.messages for r in back] == [r.messages for r in records]
    assert [to_mc_item(r).question for r in back] == [to_mc_item(r).question for r in records]


@pytest.mark.parametrize("k", [0, 3, 9, 4.0, True, "6"])
def test_bad_num_facts_is_an_error(k):
    with pytest.raises(ValueError, match="num_facts"):
        generate(1, seed=0, order="reverse", num_facts=k)
    with pytest.raises(ValueError, match="num_facts"):
        mc_items(1, seed=0, order="chain", num_facts=k)
    with pytest.raises(ValueError, match="num_facts"):
        train_test_split(1, 1, seed=0, order="chain", num_facts=k)


def test_bad_order_is_an_error():
    with pytest.raises(ValueError, match="order"):
        generate(1, seed=0, order="forward")
    with pytest.raises(ValueError, match="order"):
        train_test_split(1, 1, seed=0, order="chain", test_order="Reverse")
