"""Bitune v3's step-0 rule, as pre-registered: the model whose Bitune start is closer to its LoRA start; a tie
(relative gaps within 10% of each other) goes to Gemma 3."""

from experiments.bitune_v3_model_choice import choose


def test_the_smaller_relative_jump_wins_and_a_tie_goes_to_gemma():
    smol_far = {"smollm2-135m-instruct": {"lora": 2.0, "bitune": 6.0}, "gemma3-270m": {"lora": 3.0, "bitune": 3.5}}
    assert choose(smol_far)[0] == "gemma3-270m"
    gemma_far = {"smollm2-135m-instruct": {"lora": 2.0, "bitune": 2.2}, "gemma3-270m": {"lora": 3.0, "bitune": 6.0}}
    model, reason = choose(gemma_far)
    assert model == "smollm2-135m-instruct" and "+10.0%" in reason
    tie = {"smollm2-135m-instruct": {"lora": 2.0, "bitune": 2.2}, "gemma3-270m": {"lora": 3.0, "bitune": 3.45}}
    model, reason = choose(tie)  # +10% vs +15%: within 10 points of each other
    assert model == "gemma3-270m" and reason.startswith("a tie")
