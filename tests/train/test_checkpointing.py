"""Checkpointer: round trips, retention, async saves, fingerprints, shardings, typed keys, and damaged steps."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bitune_jax.train.checkpointing import (
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    model_fingerprint,
)


def make_state(seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w": jax.random.normal(k1, (4, 3)), "b": jax.random.normal(k2, (3,)).astype(jnp.bfloat16)}
    opt = optax.adamw(1e-3)
    return {"params": params, "opt_state": opt.init(params), "step": jnp.int32(7 + seed), "rng": jax.random.key(seed)}


def assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        as_bytes = lambda v: np.atleast_1d(np.asarray(v)).view(np.uint8)
        np.testing.assert_array_equal(as_bytes(x), as_bytes(y))


FP = {"model_name": "tiny", "config_hash": "abc", "param_shapes": {"['w']": [4, 3]}}
META = {"data": {"epoch": 2, "index": 13}, "run_config": {"lr": 2e-5, "name": "t"}}


def test_round_trip_is_bitwise_and_keeps_typed_keys(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path / "ckpt", keep=2, async_save=False, fingerprint=FP) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(7, state, META)
        restored, meta = ckpt.restore(abstract_state=make_state(seed=1))
    assert meta == META
    assert_bitwise_equal(restored, state)
    assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)  # NamedTuples come back as themselves
    np.testing.assert_array_equal(jax.random.normal(restored["rng"], (3,)), jax.random.normal(state["rng"], (3,)))


def test_keep_last_n_latest_step_and_async_wait(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path, keep=2, async_save=True)
    for step in (1, 2, 3):
        ckpt.save(step, state | {"step": jnp.int32(step)}, {"data": {"epoch": 0, "index": step}})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "3"]
    assert not ckpt.save(3, state, {})  # an existing step is not overwritten
    restored, meta = ckpt.restore(2, abstract_state=state)
    assert int(restored["step"]) == 2 and meta["data"] == {"epoch": 0, "index": 2}
    ckpt.close()
    # a new Checkpointer over the same directory (a restarted run) sees the same steps
    again = Checkpointer(tmp_path, keep=2, async_save=False)
    assert again.latest_step() == 3
    again.close()


def test_fingerprint_mismatch_names_field_and_directory(tmp_path):
    params = make_state()["params"]
    fp = model_fingerprint("smollm2-135m", {"layers": 30, "dim": 576}, params)
    assert fp["num_params"] == 15 and fp["param_shapes"]["['w']"] == [4, 3]
    with Checkpointer(tmp_path / "run", async_save=False, fingerprint=fp) as ckpt:
        ckpt.save(1, make_state(), {})
    other_config = model_fingerprint("smollm2-135m", {"layers": 12, "dim": 576}, params)
    with Checkpointer(tmp_path / "run", fingerprint=other_config) as ckpt:
        with pytest.raises(CheckpointMismatchError, match=r"another model.*run.*'config_hash'"):
            ckpt.restore(abstract_state=make_state())
    other_shape = model_fingerprint("smollm2-135m", {"layers": 30, "dim": 576}, {**params, "w": jnp.zeros((5, 3))})
    with Checkpointer(tmp_path / "run", fingerprint=other_shape) as ckpt:
        expected = r"'param_shapes' differs at parameter \['w'\]: saved \[4, 3\], current \[5, 3\]"
        with pytest.raises(CheckpointMismatchError, match=expected):
            ckpt.restore(abstract_state=make_state())
    other_name = {**fp, "model_name": "gemma-2b"}
    with Checkpointer(tmp_path / "run", fingerprint=other_name) as ckpt:
        with pytest.raises(CheckpointMismatchError, match=str(tmp_path / "run") + r".*'model_name'"):
            ckpt.restore(abstract_state=make_state())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's aborted reads
def test_tree_that_does_not_fit_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, make_state(), {})
        bad = make_state()
        bad["params"] = {"w": jnp.zeros((5, 3)), "b": bad["params"]["b"]}
        with pytest.raises(CheckpointMismatchError, match=r"does not fit the requested state tree"):
            ckpt.restore(abstract_state=bad)
        gc.collect()  # orbax's aborted reads are collected here, under this test's warning filter
        with pytest.raises(FileNotFoundError, match="step 9"):
            ckpt.restore(9, abstract_state=make_state())


def test_restore_into_given_sharding(tmp_path):
    state = make_state()
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(3, state, {})
        restored, _ = ckpt.restore(abstract_state=abstract)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == sharding
    assert_bitwise_equal(restored, state)


def test_restore_batched_keys_into_named_sharding(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = {"keys": jax.random.split(jax.random.key(3), 4), "x": jnp.arange(4.0)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, {})
        restored, _ = ckpt.restore(abstract_state=abstract)
    assert restored["keys"].shape == (4,) and restored["x"].sharding == sharding
    assert_bitwise_equal(restored, state)


def test_meta_must_be_json(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        with pytest.raises(TypeError, match="not JSON-serializable"):
            ckpt.save(1, make_state(), {"bad": object()})
        ckpt.save(2, make_state(), {"np": np.int64(3), "arr": np.arange(2)})  # numpy is converted
        assert ckpt.restore(abstract_state=make_state())[1] == {"np": 3, "arr": [0, 1]}


def test_damaged_steps_are_named_moved_aside_and_skipped(tmp_path):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=3, async_save=False) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, make_state(step), {"step": step})
    (directory / "3" / "meta" / "metadata").write_text("{not json")
    for manifest in (directory / "2").rglob("manifest.ocdbt"):
        manifest.write_bytes(manifest.read_bytes()[:16])
    reports = []
    with Checkpointer(directory, keep=3, async_save=False) as ckpt:
        with pytest.raises(CheckpointCorruptError, match=r"\(step 3\): its metadata cannot be read: JSONDecodeError"):
            ckpt.restore(3, abstract_state=make_state())
        step, state, meta = ckpt.restore_newest_readable(abstract_state=make_state(), report=reports.append)
        assert step == 1 and meta == {"step": 1} and ckpt.all_steps() == [1]
        assert_bitwise_equal(state, make_state(1))
    assert "(step 3)" in reports[0] and "moved step 3 aside" in reports[0]
    assert "(step 2): its arrays cannot be read" in reports[1] and "manifest.ocdbt" in reports[1]
    assert sorted(p.name for p in (tmp_path / "ckpt.corrupt").iterdir()) == ["2", "3"]


def test_when_no_step_restores_nothing_is_moved(tmp_path):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, make_state(), {})
    (directory / "1" / "meta" / "metadata").write_text("")
    with Checkpointer(directory, async_save=False) as ckpt:
        with pytest.raises(CheckpointCorruptError, match=r"no checkpoint step .* can be read:\n  step 1: "):
            ckpt.restore_newest_readable(abstract_state=make_state())
    assert (directory / "1").is_dir() and not (tmp_path / "ckpt.corrupt").exists()


DAMAGE = ("truncate", "delete", "zero_fill", "flip_bytes", "empty_folder", "stray_folder")


def damage(directory, step: int, kind: str) -> None:
    """Damage step `step` under `directory` as a disk, a kill or a user would: the largest data file cut, deleted,
    zero-filled or with a few bytes flipped; the step folder emptied; or a stray numeric folder after it."""
    step_dir = directory / str(step)
    if kind == "empty_folder":
        for p in sorted(step_dir.rglob("*"), key=lambda p: -len(p.parts)):
            p.unlink() if p.is_file() else p.rmdir()
        return
    if kind == "stray_folder":
        (directory / str(step + 1)).mkdir()
        return
    largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    if kind == "truncate":
        largest.write_bytes(data[: len(data) // 2])
    elif kind == "delete":
        largest.unlink()
    elif kind == "zero_fill":
        largest.write_bytes(bytes(len(data)))
    elif kind == "flip_bytes":
        for i in range(len(data) // 2, len(data) // 2 + 4):
            data[i] ^= 0xFF
        largest.write_bytes(bytes(data))
    else:
        raise ValueError(kind)


def big_state(seed: int):
    """Arrays large enough that the largest file holds raw array bytes, as a real checkpoint's does."""
    k = jax.random.key(seed)
    return {"w": jax.random.normal(k, (256, 512)), "step": jnp.int32(seed), "rng": k}


@pytest.mark.parametrize("kind", DAMAGE)
def test_every_kind_of_damage_to_the_newest_step_falls_back_to_the_previous_one(tmp_path, kind):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=3, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, big_state(step), {"step": step})
    damage(directory, 2, kind)
    reports = []
    with Checkpointer(directory, keep=3, async_save=False) as ckpt:
        step, state, meta = ckpt.restore_newest_readable(abstract_state=big_state(0), report=reports.append)
    newest, expected = (3, 2) if kind == "stray_folder" else (2, 1)  # a stray folder is newer than every real step
    assert (step, meta) == (expected, {"step": expected})
    assert_bitwise_equal(state, big_state(step))
    assert len(reports) == 1 and f"(step {newest})" in reports[0] and f"moved step {newest} aside" in reports[0]
    assert (tmp_path / "ckpt.corrupt" / str(newest)).is_dir()


def test_an_array_that_differs_from_its_saved_checksum_is_damage(tmp_path):
    """Values that orbax decodes without complaint but that are not the ones saved (here the record's checksum is
    edited, as a file from another step would differ) are named as damage, not restored."""
    import json

    directory = tmp_path / "ckpt"
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, big_state(1), {})
    record_file = directory / "1" / "meta" / "metadata"
    record = json.loads(record_file.read_text())
    assert sorted(record["checksums"]) == ["rng", "step", "w"]
    record["checksums"]["w"] = "0" * 16
    record_file.write_text(json.dumps(record))
    with Checkpointer(directory, async_save=False) as ckpt:
        with pytest.raises(CheckpointCorruptError, match=r"\(step 1\): array 'w' does not match the checksum"):
            ckpt.restore(1, abstract_state=big_state(0))
