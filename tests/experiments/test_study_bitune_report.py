"""The Bitune study's comparisons on hand-made records: each pools the seeds both sides have, and says which."""

import numpy as np

from experiments import study_bitune


def record(arm: str, order: str, seed: int, correct: list[int]) -> dict:
    return {
        "point": {
            "workdir": f"runs/{arm}_{order}_seed{seed}",
            "data.train_path": f"data/train_{order}_k6.jsonl",
            "seed": seed,
        },
        "final_eval_items": {"correct": correct},
    }


def test_comparisons_pool_the_seeds_both_sides_have_and_name_them():
    rng = np.random.default_rng(0)
    runs = {
        (arm, order, seed): rng.integers(0, 2, 40).tolist()
        for arm in ("lora", "bitune")
        for order in ("reverse", "chain")
        for seed in (42, 43, 44)
        if not (arm == "bitune" and order == "chain" and seed != 42)  # a study under way: one chain Bitune run
    }
    summaries = [record(*key, correct) for key, correct in runs.items()]
    comp = {(c["comparison"], c["order"]): c for c in study_bitune.comparisons(summaries)}

    assert comp[("bitune - lora", "reverse")]["seeds"] == [42, 43, 44]
    assert comp[("bitune - lora", "reverse")]["items"] == 120
    assert comp[("bitune - lora", "chain")]["seeds"] == [42]
    interaction = comp[("(bitune - lora): reverse - chain", "both")]
    assert interaction["seeds"] == [42] and interaction["items"] == 40  # only the seed all four runs have
    by_hand = np.mean(np.subtract(runs[("bitune", "reverse", 42)], runs[("lora", "reverse", 42)])) - np.mean(
        np.subtract(runs[("bitune", "chain", 42)], runs[("lora", "chain", 42)])
    )
    np.testing.assert_allclose(interaction["estimate"], by_hand, rtol=0, atol=1e-12)
    assert interaction["low"] <= interaction["estimate"] <= interaction["high"]

    table = study_bitune.markdown([], list(comp.values()), 40)
    assert "| bitune - lora | reverse | 42, 43, 44 |" in table and "| bitune - lora | chain | 42 |" in table
