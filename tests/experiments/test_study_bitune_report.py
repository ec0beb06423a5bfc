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


def test_v3_compares_its_own_pairs_including_the_parameter_matched_lora():
    from experiments.configs import study_bitune_v3_gemma3 as v3

    rng = np.random.default_rng(1)
    summaries = [record(arm, "reverse", seed, rng.integers(0, 2, 30).tolist()) for arm in v3.ARMS for seed in v3.SEEDS]
    comp = {c["comparison"]: c for c in study_bitune.comparisons(summaries, v3.COMPARISONS)}
    assert list(comp) == [f"{a} - {b}" for a, b in v3.COMPARISONS]  # primary 1 first, then primary 2's two
    assert all(c["seeds"] == [42, 43] and c["items"] == 60 for c in comp.values())
    names = [p["workdir"].rsplit("/", 1)[1] for p in v3.get_sweep()]
    assert len(names) == len(set(names)) == 8 and {study_bitune._arm(p) for p in v3.get_sweep()} == set(v3.ARMS)


def test_the_pilot_gate_holds_only_when_every_curve_has_flattened():
    flat = {"accuracy_by_update": {"100": 0.40, "200": 0.55, "300": 0.57}}
    moving = {"accuracy_by_update": {"100": 0.40, "200": 0.50, "300": 0.58}}
    assert study_bitune.pilot_gate({"LoRA": flat, "Bitune": flat}, 0.03).startswith("holds")
    verdict = study_bitune.pilot_gate({"LoRA": flat, "Bitune": moving}, 0.03)
    assert verdict.startswith("does not hold") and "Bitune 0.080" in verdict
    assert study_bitune.pilot_gate({"LoRA": {"accuracy_by_update": {"100": 0.4}}}, 0.03).startswith("does not")
    at_edge = {"accuracy_by_update": {"500": 190 / 200, "600": 196 / 200}}  # a move of exactly 0.03 holds
    assert study_bitune.pilot_gate({"LoRA": at_edge}, 0.03) == "holds (LoRA 0.030)"


def test_the_pilot_ceiling_holds_only_below_it():
    assert study_bitune.pilot_ceiling({"accuracy_by_update": {"500": 0.95, "600": 0.88}}, 0.9) == "holds (0.880)"
    assert study_bitune.pilot_ceiling({"accuracy_by_update": {"100": 0.6, "600": 1.0}}, 0.9).startswith("does not")


def test_v3_pilot_runs_at_k8_beside_the_recorded_k6_one():
    from experiments.configs import study_bitune_v3_gemma3 as v3

    k8, k6 = v3.get_pilot(), v3.get_pilot_k6()
    assert [study_bitune.point_task(p) for p in k8] == [("reverse", 8)] * 2
    assert [study_bitune.point_task(p) for p in k6] == [("reverse", 6)] * 2
    assert k8[0]["objective"] == "peft" and "peft.rank" not in k8[0]  # the baseline, which the ceiling reads, first
    assert not {p["workdir"] for p in k8} & {p["workdir"] for p in k6}  # the K = 6 runs are never reused or removed
