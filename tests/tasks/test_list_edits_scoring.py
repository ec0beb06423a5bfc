"""Single-step scoring helpers of the list-edits pilot gate, without a model."""

from bitune_jax.tasks import list_edits
from bitune_jax.tasks.list_edits_scoring import any_list, chat_messages, generate_texts, verdict


def test_verdicts_tell_the_error_kinds_apart():
    gold = ["apple", "cat", "dog"]
    assert verdict(["apple", "cat", "dog"], gold) == "correct"
    assert verdict(["cat", "apple", "dog"], gold) == "wrong_order"
    assert verdict(["apple", "cat"], gold) == "wrong_words" and verdict(["apple", "cat", "cat"], gold) == "wrong_words"
    assert verdict(None, gold) == "no_list"


def test_any_list_forgives_a_restated_old_list_but_not_a_wrong_one():
    gold = ["apple", "dog"]
    assert any_list("The list was [apple, cat, dog]; now it is [apple, dog].", gold)
    assert not any_list("[apple, cat, dog] then [dog, apple]", gold)
    assert verdict(list_edits.parse_list("The list was [apple, cat, dog]; now [apple, dog]."), gold) == "wrong_words"


def test_shots_come_before_the_item_as_worked_turns():
    items = list_edits.single_step_items(3, seed=0)
    messages = chat_messages(items[0], items[1:])
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == items[1]["gold"] and messages[-1]["content"] == items[0]["prompt"]


def test_generated_texts_come_back_in_prompt_order_in_one_engine_call():
    class Tok:
        def decode(self, ids):
            return " ".join(map(str, ids))

    class LM:
        tokenizer = Tok()
        calls: list[tuple[int, int, int]] = []

        def generate(self, prompts, max_new_tokens, slots):
            self.calls.append((len(prompts), max_new_tokens, slots))
            return [[len(p)] for p in prompts]  # "answers" the prompt's length

    prompts = [[1] * n for n in (5, 2, 9, 1, 7)]
    lm = LM()
    assert generate_texts(lm, prompts, batch=2, max_new_tokens=4) == ["5", "2", "9", "1", "7"]
    assert lm.calls == [(5, 4, 2)]  # every prompt to the engine at once, `batch` slots
