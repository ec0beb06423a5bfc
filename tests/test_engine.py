"""The continuous-batching engine against the static batch it replaces: greedy tokens equal `generate_tokens` (or
`bitune_generate`) of each request alone, whatever the slot count, with requests entering while others decode;
sampled tokens depend on a request's seed only; stop strings cut; bad requests fail before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax import engine as engine_lib
from bitune_jax.bitune import BituneConfig, bitune_generate
from bitune_jax.engine import BituneDecoder, Engine, PlainDecoder, Request
from bitune_jax.generation import generate_tokens
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig, init_adapters
from tests.bitune.test_bitune import perturbed_trainable
from tests.tiny_models import TINY

LENGTHS = (7, 1, 12, 30, 5)  # prompts
BUDGETS = (20, 5, 33, 8, 12)  # max_new_tokens
SAMPLED = dict(temperature=0.8, top_p=0.9, top_k=20)


def tiny(family: str):
    cfg = TINY[family].replace(max_seq_len=96)
    return cfg, init_params(cfg, jax.random.key(0), scale=0.3)  # scale 0.3: peaked logits, no near-ties


def prompts_for(cfg):
    rng = np.random.RandomState(0)
    return [rng.randint(3, cfg.vocab_size, n).tolist() for n in LENGTHS]


def static_reference(cfg, params, prompts, budgets, eos, adapters=None, peft=None):
    """`generate_tokens` on the prompts as one left-padded static batch (greedy: equal to each alone, the static
    path's own test) with the largest budget, each row cut at its own budget and EOS: one compilation."""
    width = max(map(len, prompts))
    tokens = np.zeros((len(prompts), width), np.int32)
    positions = np.full((len(prompts), width), -1, np.int32)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p) :], positions[i, width - len(p) :] = p, np.arange(len(p))
    out = generate_tokens(
        params,
        jnp.asarray(tokens),
        jnp.asarray(positions),
        jax.random.key(0),
        cfg=cfg,
        max_new_tokens=max(budgets),
        eos_ids=eos,
        pad_id=0,
        adapters=adapters,
        peft=peft,
    )
    return [row[:b] for row, b in zip(out.rows(), budgets)]


def an_eos_mid_way(cfg, params, prompts):
    """A token the first request emits at step 4 without EOS: as EOS, requests end at different lengths."""
    return (static_reference(cfg, params, prompts, BUDGETS, ())[0][4],)


@pytest.mark.parametrize("family", ["llama", pytest.param("gemma3", marks=pytest.mark.integration)])
def test_greedy_equals_the_static_decode_of_each_request_alone(family):
    cfg, params = tiny(family)  # gemma3: sliding windows of 5, shorter than the prompts
    prompts = prompts_for(cfg)
    eos = an_eos_mid_way(cfg, params, prompts)
    reference = static_reference(cfg, params, prompts, BUDGETS, eos)
    assert len({len(r) for r in reference}) > 2 and any(r[-1] == eos[0] for r in reference)
    requests = [Request(p, b) for p, b in zip(prompts, BUDGETS)]
    for slots in (1, 3, 8):  # 1 and 3: later requests enter while earlier ones decode
        engine = Engine(PlainDecoder(cfg), (params, None), slots=slots, eos_ids=eos, steps_per_sync=3)
        done = engine.run(requests)
        assert [c.tokens[0] for c in done] == reference, slots
        assert [c.finished[0] for c in done] == [r[-1] == eos[0] for r in reference]


@pytest.mark.integration
def test_unmerged_peft_adapters_decode_as_the_static_path():
    cfg, params = tiny("llama")
    peft = PeftConfig(rank=4, alpha=8.0)
    adapters = init_adapters(params, peft, jax.random.key(1))
    adapters = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(2), x.shape), adapters)
    prompts = prompts_for(cfg)
    reference = static_reference(cfg, params, prompts, BUDGETS, (), adapters, peft)
    assert reference != static_reference(cfg, params, prompts, BUDGETS, ())  # the adapters act
    engine = Engine(PlainDecoder(cfg, peft=peft), (params, adapters), slots=2)
    assert [c.tokens[0] for c in engine.run([Request(p, b) for p, b in zip(prompts, BUDGETS)])] == reference


@pytest.mark.integration
def test_bitune_decodes_from_the_mixed_cache_as_bitune_generate():
    cfg, params = tiny("llama")
    bcfg = BituneConfig(peft=PeftConfig(rank=4, alpha=8.0))
    trainable = perturbed_trainable(params, cfg, bcfg)
    prompts = prompts_for(cfg)  # one of a single token: the bidirectional head is all padding
    batched = bitune_generate(params, trainable, prompts, cfg, bcfg, max_new_tokens=max(BUDGETS))  # = alone, greedy
    reference = [row[:b] for row, b in zip(batched, BUDGETS)]
    engine = Engine(BituneDecoder(cfg, bcfg), (params, trainable), slots=3, steps_per_sync=5)
    assert [c.tokens[0] for c in engine.run([Request(p, b) for p, b in zip(prompts, BUDGETS)])] == reference


def test_samples_depend_on_the_request_seed_alone():
    cfg, params = tiny("llama")
    prompts = prompts_for(cfg)
    requests = [Request(p, 16, n=3, seed=i, **SAMPLED) for i, p in enumerate(prompts)]

    def run(slots, order, steps):
        done = Engine(PlainDecoder(cfg), (params, None), slots=slots, steps_per_sync=steps).run(
            [requests[i] for i in order]
        )
        return {order[k]: c.tokens for k, c in enumerate(done)}

    first = run(2, range(5), 8)
    assert first == run(7, [4, 2, 0, 3, 1], 3)
    assert all(len({tuple(s) for s in samples}) > 1 for samples in first.values())  # n samples, n draws
    alone = Engine(PlainDecoder(cfg), (params, None), slots=1).run([Request(prompts[2], 16, n=1, **SAMPLED, seed=2)])
    assert alone[0].tokens[0] == first[2][0]  # sample 0 of a request is the request with n=1
    greedy = Engine(PlainDecoder(cfg), (params, None)).run([Request(prompts[2], 16)])[0].tokens[0]
    assert first[2][0] != greedy


class Letters:
    """A tokenizer for stop strings: id i is one letter."""

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def test_a_stop_string_ends_the_sample_and_the_text_before_it():
    cfg, params = tiny("llama")
    prompt = prompts_for(cfg)[2]
    full = static_reference(cfg, params, [prompt], [30], ())[0]
    stop = Letters().decode(full[9:11])  # the text of tokens 9 and 10
    text = Letters().decode(full)
    done = Engine(PlainDecoder(cfg), (params, None), tokenizer=Letters(), steps_per_sync=4).run(
        [Request(prompt, 30, stop=(stop,)), Request(prompt, 30)]
    )
    cut = text.index(stop)
    assert done[0].texts[0] == text[:cut] and done[0].finished[0]
    assert done[0].tokens[0] == full[: cut + 2]  # up to the token that completes the stop string
    assert done[1].tokens[0] == full and done[1].texts[0] == text and not done[1].finished[0]


@pytest.mark.parametrize(
    "request_, match",
    [
        (Request([]), "request 1: the prompt is empty"),
        (Request([3], max_new_tokens=0), "request 1: max_new_tokens must be >= 1"),
        (Request([3], n=0), "request 1: n \\(samples\\) must be >= 1"),
        (Request([3], top_p=0.0), "request 1: top_p must be in \\(0, 1\\]"),
        (Request([3], top_p=1.5), "request 1: top_p must be in \\(0, 1\\]"),
        (Request([3], temperature=-1.0), "request 1: temperature must be a finite number >= 0"),
        (Request([3], temperature=float("nan")), "request 1: temperature must be a finite number >= 0, got nan"),
        (
            Request([3] * 90, max_new_tokens=8),
            "request 1: a prompt of 90 tokens .* exceeds the model context 96",
        ),
        (Request([3, 500]), "request 1: token id 500 is outside the vocabulary of 97"),
        (Request([3], stop=("x",)), "request 1: stop strings need an engine with a tokenizer"),
    ],
)
def test_bad_requests_fail_before_anything_compiles(request_, match, monkeypatch):
    cfg, params = tiny("llama")

    def no_compiling(*_, **__):
        raise AssertionError("compiled before checking the requests")

    monkeypatch.setattr(engine_lib, "prefill", no_compiling)
    monkeypatch.setattr(engine_lib, "decode", no_compiling)
    with pytest.raises(ValueError, match=match):
        Engine(PlainDecoder(cfg), (params, None)).run([Request([3, 4]), request_])


MESH_WORKER = """
import json, jax, numpy as np
from bitune_jax.engine import Engine, PlainDecoder, Request
from bitune_jax.models.sharding import make_mesh, tree_shardings
from bitune_jax.models.transformer import init_params
from tests.test_engine import BUDGETS, SAMPLED, prompts_for, tiny

cfg, params = tiny("llama")  # 2 key/value heads: one a tensor shard
requests = [Request(p, b) for p, b in zip(prompts_for(cfg), BUDGETS)]
requests += [Request(p, 8, n=2, seed=i, **SAMPLED) for i, p in enumerate(prompts_for(cfg))]
alone = Engine(PlainDecoder(cfg), (params, None), slots=4).run(requests)
mesh = make_mesh(data=2, tensor=2)
placed = jax.device_put(params, tree_shardings(params, mesh))
sharded = Engine(PlainDecoder(cfg), (placed, None), slots=4, mesh=mesh).run(requests)
from bitune_jax.engine import Slots, slot_shardings, step_weights
layout = slot_shardings(Slots.init(cfg, 4, 16, np.float32, 2), mesh)
per_layer = step_weights(PlainDecoder(cfg), (placed, None))[0]["layers"]
specs = [str(layout.cache.k[-1].spec), str(layout.cache.positions.spec), str(layout.token.spec)]
specs += [str(per_layer[-1][n].sharding.spec) for n in ("q_proj", "o_proj")]
print(json.dumps([[c.tokens for c in alone], [c.tokens for c in sharded], specs]))
"""


@pytest.mark.integration
def test_the_engine_on_a_mesh_decodes_as_on_one_device():
    """Slots over data=2 x tensor=2 simulated devices (rows split, key/value heads split), weights by the default
    rules (the decode step's per-layer copy keeps them): the same greedy and sampled tokens as one device."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", MESH_WORKER], cwd=root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    alone, sharded, specs = json.loads(out.stdout.strip().splitlines()[-1])
    assert sharded == alone
    assert specs == [
        "P('data', 'tensor', None, None)",
        "P('data', None)",
        "P('data',)",
        "P(None, 'tensor')",
        "P('tensor',)",
    ]
