"""Parameter and batch sharding rules on meshes of any size, in the unit tier's one process and one device: the rules
read only the mesh's axis sizes, so `AbstractMesh` (sizes, no devices) stands in for an 8-device mesh. That the
shardings run, and give the single-device numbers, is tests/train/test_sharded_step.py (simulated devices, in
subprocesses, integration tier)."""

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bitune_jax.bitune import BituneConfig, init_trainable
from bitune_jax.data.batch import SFTBatch
from bitune_jax.models.sharding import AXES, make_mesh, spec_for, tree_shardings
from bitune_jax.models.transformer import init_params
from bitune_jax.peft import PeftConfig
from bitune_jax.train.sharding import batch_shardings, row_multiple
from tests.tiny_models import TINY

FS = ("fsdp", "sequence")  # what a rule's "fsdp" becomes when both axes are larger than 1


def mesh(data=1, fsdp=1, sequence=1, tensor=1) -> AbstractMesh:
    return AbstractMesh((data, fsdp, sequence, tensor), AXES)


@pytest.fixture(scope="module")
def shapes():
    """The tiny llama's parameter and Bitune trainable trees as shapes (`eval_shape`: nothing is computed)."""
    cfg = TINY["llama"]  # untied: embed and lm_head; dims 64 (model), 96 (mlp), 64/32 (q/kv heads), vocab 97
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    bcfg = BituneConfig(peft=PeftConfig(rank=4))
    trainable = jax.eval_shape(
        lambda: init_trainable(init_params(cfg, jax.random.key(0)), cfg, bcfg, jax.random.key(1))
    )
    return params, trainable


def test_kernels_split_over_fsdp_x_sequence_and_tensor_and_the_layer_axis_never():
    m = mesh(fsdp=2, sequence=2, tensor=2)
    assert spec_for("layers/q_proj", (4, 64, 64), m) == P(None, FS, "tensor")  # [L, in, out]
    assert spec_for("layers/down_proj", (4, 96, 64), m) == P(None, "tensor", FS)  # row-parallel: in over tensor
    assert spec_for("lm_head", (64, 128), m) == P(FS, "tensor")
    assert spec_for("embed", (128, 64), m) == P("tensor", FS)
    # A stacked tree (three more leading axes) keeps every leading axis whole.
    assert spec_for("layers/up_proj", (3, 2, 4, 64, 96), m) == P(None, None, None, FS, "tensor")


def test_an_axis_that_does_not_divide_its_dim_is_dropped():
    """A rule's `fsdp` drops `sequence` first, then `fsdp`; an axis of size 1 is never named."""
    m = mesh(fsdp=2, sequence=4, tensor=2)
    assert spec_for("layers/q_proj", (4, 64, 64), m) == P(None, FS, "tensor")  # 64 % 8 == 0
    assert spec_for("layers/q_proj", (4, 12, 64), m) == P(None, "fsdp", "tensor")  # 12 % 8 != 0, 12 % 2 == 0
    assert spec_for("layers/q_proj", (4, 7, 63), m) == P(None, None, None)  # odd dims: replicated
    assert spec_for("embed", (97, 64), m) == P(None, FS)  # the tiny models' odd vocabulary
    only_sequence = mesh(data=2, sequence=4)
    assert spec_for("layers/q_proj", (4, 64, 64), only_sequence) == P(None, "sequence", None)
    assert spec_for("layers/q_proj", (4, 64, 64), mesh(data=8)) == P(None, None, None)


def test_lora_a_shards_like_its_kernels_input_and_b_like_its_output():
    """A [L, in, r] splits `in` as the kernel does and keeps the rank whole; B [L, r, out] splits `out`; wherever
    the adapter tree sits (a Bitune set's `causal/...` too)."""
    m = mesh(fsdp=2, sequence=2, tensor=2)
    for prefix in ("", "causal/", "bidir/"):
        assert spec_for(f"{prefix}layers/q_proj/lora_a", (4, 64, 8), m) == P(None, FS, None)
        assert spec_for(f"{prefix}layers/q_proj/lora_b", (4, 8, 64), m) == P(None, None, "tensor")
        assert spec_for(f"{prefix}layers/o_proj/lora_a", (4, 64, 8), m) == P(None, "tensor", None)
        assert spec_for(f"{prefix}layers/down_proj/lora_b", (4, 8, 64), m) == P(None, None, FS)
    # DoRA magnitudes, IA3 vectors, norms and the mixing weights match no rule: replicated.
    for path, shape in [
        ("layers/q_proj/dora_m", (4, 64)),
        ("layers/k_proj/ia3_out", (4, 32)),
        ("layers/attn_in_norm", (4, 64)),
        ("mix/w_k", (4,)),
    ]:
        assert spec_for(path, shape, m) == P(), path


def test_a_rule_longer_than_the_leaf_does_not_apply():
    assert spec_for("embed", (64,), mesh(fsdp=2, tensor=2)) == P()


def test_tree_shardings_name_every_leaf_by_its_path(shapes):
    """Over whole trees, the paths of nested dicts reach the rules: the model's parameters, the Bitune trainable
    tree, and an optimizer-state-like wrapper (a tuple around a copy of the tree) whose moments follow their
    parameters."""
    params, trainable = shapes
    m = mesh(data=2, fsdp=2, tensor=2)
    got = tree_shardings(params, m)
    assert got["layers"]["q_proj"] == NamedSharding(m, P(None, "fsdp", "tensor"))
    assert got["layers"]["o_proj"] == NamedSharding(m, P(None, "tensor", "fsdp"))
    assert got["embed"].spec == P(None, "fsdp")  # vocab 97 is odd
    assert got["lm_head"].spec == P("fsdp", None)
    assert got["final_norm"].spec == got["layers"]["attn_in_norm"].spec == P()
    for name, sharding in jax.tree_util.tree_flatten_with_path(got["layers"])[0]:
        assert sharding.spec == P() or sharding.spec[0] is None, name  # the layer axis is never split
    t = tree_shardings(trainable, m)
    assert t["causal"]["layers"]["v_proj"]["lora_a"].spec == t["bidir"]["layers"]["v_proj"]["lora_a"].spec
    assert t["causal"]["layers"]["v_proj"]["lora_a"].spec == P(None, "fsdp", None)
    assert t["bidir"]["layers"]["gate_proj"]["lora_b"].spec == P(None, None, "tensor")
    assert t["mix"]["w_v"].spec == P()
    moments = tree_shardings((0, {"mu": params}), m)[1]["mu"]
    assert moments["layers"]["up_proj"] == got["layers"]["up_proj"]


def test_on_one_device_everything_is_replicated(shapes):
    params, _ = shapes
    one = make_mesh(devices=jax.devices()[:1])
    assert all(s.is_fully_replicated for s in jax.tree.leaves(tree_shardings(params, one)))
    with pytest.raises(ValueError, match="fsdp=2 .* = 2 devices, but 1 are available"):
        make_mesh(fsdp=2, devices=jax.devices()[:1])


@pytest.mark.parametrize(
    "sizes, multiple",
    [((1, 1, 1, 1), 1), ((2, 2, 2, 1), 4), ((1, 8, 1, 1), 8), ((1, 1, 8, 1), 1), ((2, 1, 1, 4), 2)],
)
def test_row_multiple_is_data_x_fsdp(sizes, multiple):
    assert row_multiple(mesh(*sizes)) == multiple


def test_batch_rows_split_over_data_x_fsdp_and_tokens_over_sequence():
    """A 6-row batch padded to the mesh's row multiple: every device holds whole rows of its share of tokens."""
    m = mesh(data=2, fsdp=2, sequence=2, tensor=1)
    rng = np.random.RandomState(0)
    batch = SFTBatch(
        tokens=rng.randint(3, 97, (6, 16)).astype(np.int32),
        prompt_len=np.full(6, 3, np.int32),
        length=np.full(6, 16, np.int32),
        example_id=np.arange(6, dtype=np.int32),
    ).pad_rows(row_multiple(m))
    assert batch.tokens.shape == (8, 16) and list(batch.example_id[6:]) == [-1, -1]
    sh = batch_shardings(batch, m)
    assert sh.tokens.spec == P(("data", "fsdp"), "sequence")
    assert sh.prompt_len.spec == sh.length.spec == sh.example_id.spec == P(("data", "fsdp"))
    assert sh.tokens.shard_shape(batch.tokens.shape) == (2, 8)
    assert sh.length.shard_shape(batch.length.shape) == (2,)
