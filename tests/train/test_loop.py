"""The training loop end to end on a tiny model: outputs, exact resume after SIGKILL, saturation stop, errors."""

import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bitune_jax.train.loop import run
from tests.train.test_checkpointing import DAMAGE, damage
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "train" / "tiny_config.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def step_losses(workdir):
    rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["scope"] == "step"}


def launch(model_dir, workdir, epochs=4, extra=()):
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        f"--config={CONFIG}",
        f"--config.model.name={model_dir}",
        f"--config.workdir={workdir}",
        f"--config.train.epochs={epochs}",
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_for_step(proc, workdir, step, timeout=600):
    """Until the run in `proc` has logged `step` (it must still be running)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (pathlib.Path(workdir) / "metrics.jsonl").exists() and any(s >= step for s in step_losses(workdir)):
            return
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.1)
    raise TimeoutError(f"step {step} not logged in {timeout} s")


def test_run_writes_logs_checkpoints_plot_and_accuracy_rises(model_dir, tmp_path):
    summary = run(tiny_config(model_dir, tmp_path, **{"saturation.enabled": False}))
    assert summary["steps"] == 12 and summary["epochs"] == 4
    acc = [h["token_accuracy"] for h in summary["history"]]
    assert acc[-1] > acc[0] + 0.1, acc
    assert (tmp_path / "token_accuracy_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*")) or list(tmp_path.rglob("events.out*"))
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 12
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 12
    assert len(step_losses(tmp_path)) == 12
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["scope"] == "step"]
    # one sample a step: the windowed per-sample accuracy of a one-step window is that step's token accuracy
    assert all(r["sample_token_accuracy_window"] == pytest.approx(r["token_accuracy"], rel=1e-6) for r in steps)


def test_windowed_sample_accuracy_averages_the_samples_since_the_last_log(model_dir, tmp_path):
    """Logging every 3 steps (one epoch), the window is the epoch: its per-sample mean is the epoch's."""
    summary = run(tiny_config(model_dir, tmp_path, **{"saturation.enabled": False, "log.every_steps": 3}))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    window = [r["sample_token_accuracy_window"] for r in rows if r["scope"] == "step"]
    assert window == pytest.approx([h["sample_token_accuracy"] for h in summary["history"]], rel=1e-6)


def test_saturation_stops_a_run_that_memorizes(model_dir, tmp_path):
    summary = run(
        tiny_config(
            model_dir,
            tmp_path,
            **{
                "train.epochs": 40,
                "train.lr": 1e-2,
                "saturation.mode": "stop",
                "saturation.threshold": 0.6,
                "saturation.window": 0,
            },
        )
    )
    sat = summary["saturation"]
    assert sat is not None and sat["reason"] == "threshold"
    assert summary["epochs"] == sat["epoch"] < 40
    assert summary["history"][-1]["token_accuracy"] >= 0.6 > summary["history"][-2]["token_accuracy"]
    assert sat["updates_saved"] == 3 * (40 - summary["epochs"])


def test_sigkill_then_resume_is_bitwise_identical(model_dir, tmp_path):
    reference = launch(model_dir, tmp_path / "a")
    assert reference.wait(timeout=600) == 0, reference.stdout.read().decode()[-3000:]
    expected = step_losses(tmp_path / "a")

    victim = launch(model_dir, tmp_path / "b")
    wait_for_step(victim, tmp_path / "b", 5)  # checkpoints exist at 2 and 4
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = launch(model_dir, tmp_path / "b")
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming after step" in out
    got = step_losses(tmp_path / "b")
    assert sorted(got) == sorted(expected)
    assert all(got[s] == expected[s] for s in expected), (got, expected)  # bitwise: same floats


def test_bad_config_and_mismatched_inputs(model_dir, tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.run", f"--config={CONFIG}", "--config.train.epoch=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "epoch" in bad.stderr
    with pytest.raises(ValueError, match=r"config.data.train_path=.*missing.jsonl.*no such file"):
        run(
            tiny_config(
                model_dir,
                tmp_path / "x",
                **{"data.source": "jsonl", "data.train_path": str(tmp_path / "missing.jsonl")},
            )
        )
    (tmp_path / "bad.jsonl").write_text('{"prompt": "hi", "response": "yo"}\n{"prompt": "hi"\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        run(
            tiny_config(
                model_dir, tmp_path / "y", **{"data.source": "jsonl", "data.train_path": str(tmp_path / "bad.jsonl")}
            )
        )
    with pytest.raises(ValueError, match="data.train_path is empty"):
        run(tiny_config(model_dir, tmp_path / "w", **{"data.source": "jsonl"}))
    with pytest.raises(ValueError, match="config.model.name is empty"):
        run(tiny_config("", tmp_path / "v"))
    small = write_tiny_model(tmp_path / "small_vocab", smollm2_tokenizer(), vocab_size=1000)
    with pytest.raises(ValueError, match=r"49152 tokens but the model's embedding has 1000 rows"):
        run(tiny_config(small, tmp_path / "u"))
    run(tiny_config(model_dir, tmp_path / "z", **{"train.epochs": 1}))
    with pytest.raises(ValueError, match="objective: saved 'full', now 'peft'"):  # refused before the load
        run(tiny_config(model_dir, tmp_path / "z", **{"objective": "peft", "train.epochs": 1}))
    with pytest.raises(ValueError, match="checkpoint from another model"):  # allowed: the weights do not fit
        run(
            tiny_config(
                model_dir,
                tmp_path / "z",
                **{"objective": "peft", "train.epochs": 1, "resume.allow_changes": "objective"},
            )
        )


def test_nan_loss_stops_with_last_good_checkpoint(model_dir, tmp_path):
    # warmup floor(0.2 x 9) = 1 update at learning rate 0: the first step is finite and checkpointed, then it diverges
    bad = {"train.lr": 1e30, "train.clip": 0.0, "train.epochs": 3, "train.warmup_frac": 0.2}
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* Last known good checkpoint: step \d+"):
        run(tiny_config(model_dir, tmp_path, **bad))
    assert np.isfinite(list(step_losses(tmp_path).values())).all()
    # rollback cannot rescue a rate 30 orders too large: it gives up after train.rollback_limit tries
    with pytest.raises(FloatingPointError, match=r"2 rollbacks \(train.rollback_limit\) did not keep the run finite"):
        run(
            tiny_config(
                model_dir,
                tmp_path / "rollback",
                **{
                    **bad,
                    "train.on_nonfinite": "rollback",
                    "train.rollback_limit": 2,
                },
            )
        )


def count_device_reads(monkeypatch):
    """Count every read of a jax.Array's value on the host (float(), int(), device_get, .tolist() ...)."""
    from jax._src import array

    reads = [0]
    value = array.ArrayImpl._value

    def counted(self):
        reads[0] += 1
        return value.fget(self)

    monkeypatch.setattr(array.ArrayImpl, "_value", property(counted))
    return reads


def test_device_reads_do_not_grow_with_steps(model_dir, tmp_path, monkeypatch):
    """Between log steps the loop only dispatches: 3 or 9 steps an epoch read the device equally often."""
    reads = count_device_reads(monkeypatch)
    counts = []
    for samples in (3, 9):
        before = reads[0]
        summary = run(
            tiny_config(
                model_dir,
                tmp_path / str(samples),
                **{
                    "data.num_samples": samples,
                    "train.epochs": 2,
                    "log.every_steps": 1000,
                    "checkpoint.every_steps": 0,
                    "saturation.enabled": False,
                    "log.tensorboard": False,
                },
            )
        )
        assert summary["steps"] == 2 * samples
        counts.append(reads[0] - before)
    assert counts[0] == counts[1], counts


def test_divergence_between_reads_stops_at_the_first_bad_batch(model_dir, tmp_path):
    """No read between steps: the first non-finite step freezes the state on the device, and the next read (here
    the epoch end) stops the run naming that batch; no checkpoint was saved, and the message says so."""
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss .* at epoch 0, batch \d.* Last known good "
        r"checkpoint: none \(no checkpoint was saved",
    ):
        run(
            tiny_config(
                model_dir,
                tmp_path,
                **{
                    "train.lr": 1e30,
                    "train.clip": 0.0,
                    "train.epochs": 3,
                    "log.every_steps": 1000,
                    "checkpoint.every_steps": 0,
                },
            )
        )
    assert not (tmp_path / "summary.json").exists()


def workdir_files(workdir):
    return {p.relative_to(workdir): p.read_bytes() for p in pathlib.Path(workdir).rglob("*") if p.is_file()}


def test_changed_resume_is_refused_untouched_then_allowed_and_recorded(model_dir, tmp_path, capsys):
    run(tiny_config(model_dir, tmp_path, **{"train.epochs": 2}))
    before = workdir_files(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)data.batch_size: saved 1, now 2.*train.lr: saved 0.003, now 0.001"):
        run(tiny_config(model_dir, tmp_path, **{"train.epochs": 2, "train.lr": 1e-3, "data.batch_size": 2}))
    assert workdir_files(tmp_path) == before  # refused before anything was written
    copy = tmp_path.parent / f"{tmp_path.name}_model_copy"
    shutil.copytree(model_dir, copy)  # the same weights under another path: not a change
    summary = run(
        tiny_config(
            copy,
            tmp_path,
            **{
                "train.epochs": 3,
                "train.lr": 1e-3,
                "log.every_steps": 2,
                "resume.allow_changes": "train.lr,train.epochs",
            },
        )
    )
    assert summary["steps"] == 9 and summary["epochs"] == 3
    out = capsys.readouterr().out
    assert "resuming with a changed train.lr (allowed by resume.allow_changes): 0.003 -> 0.001" in out
    assert "log.every_steps (no effect on the trajectory)" in out
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["changes"][-1]["after_step"] == 6
    assert record["changes"][-1]["changes"]["train.epochs"] == [2, 3]


def test_concurrent_second_run_is_refused_while_the_first_finishes_cleanly(model_dir, tmp_path):
    first = launch(model_dir, tmp_path, epochs=6)
    deadline = time.time() + 120
    while not (tmp_path / "run.lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.stdout.read().decode()
    with pytest.raises(RuntimeError, match=rf"in use by pid {first.pid} on .*run.lock"):
        run(tiny_config(model_dir, tmp_path, **{"train.epochs": 6}))
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out.decode()[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["scope"] == "step"]
    assert steps == list(range(1, 19))  # one run's rows, each step once
    assert not (tmp_path / "run.lock").exists()


def test_skip_batch_trains_through_a_poisoned_batch(model_dir, tmp_path, monkeypatch):
    """Every batch holding example 1 has a NaN loss: under on_nonfinite='skip_batch' it is skipped each epoch (its
    update never applied) and the run trains to the end on the other batches."""
    import jax.numpy as jnp

    from bitune_jax.train.objectives import Objective

    loss = Objective.loss

    def poisoned(self, trainable, frozen, batch, **kwargs):
        value, metrics = loss(self, trainable, frozen, batch, **kwargs)
        return value + jnp.where(jnp.any(batch.example_id == 1), jnp.nan, 0.0), metrics

    monkeypatch.setattr(Objective, "loss", poisoned)
    with pytest.raises(FloatingPointError, match="at epoch 0, batch"):
        run(tiny_config(model_dir, tmp_path / "stop", **{"train.epochs": 2}))
    summary = run(
        tiny_config(
            model_dir,
            tmp_path / "skip",
            **{"train.epochs": 4, "train.on_nonfinite": "skip_batch", "saturation.enabled": False},
        )
    )
    assert summary["steps"] == 12 and summary["epochs"] == 4
    assert [h["skipped_batches"] for h in summary["history"]] == [1, 1, 1, 1]
    accuracy = [h["token_accuracy"] for h in summary["history"]]
    assert accuracy[-1] > accuracy[0] + 0.05, accuracy


SPIKE, NAN = 6, 8  # batch numbers (epoch * 3 + index) of a loss spike and, two steps later, a NaN


@pytest.fixture
def diverging(monkeypatch):
    """Batch 6 (step 7) scores a loss 100x too large, batch 8 (step 9) a NaN: a divergence announced by a spike.
    The poison is keyed to the batch number, so a replay that skips batch 8 gets past it."""
    import jax.numpy as jnp

    from bitune_jax.train import step as step_module
    from bitune_jax.train.objectives import Objective

    loss, loop_step = Objective.loss, step_module.loop_step
    poison = {}  # set while the step traces, read by the loss it traces: values of the batch number being traced

    def poisoned_loss(self, trainable, frozen, batch, **kwargs):
        value, metrics = loss(self, trainable, frozen, batch, **kwargs)
        value = value * poison["scale"] + poison["add"]
        return value, {**metrics, "loss": value}

    def poisoned_step(state, frozen, batch, stats, batch_number, **kwargs):
        poison["scale"] = jnp.where(batch_number == SPIKE, 100.0, 1.0)
        poison["add"] = jnp.where(batch_number == NAN, jnp.nan, 0.0)
        return loop_step(state, frozen, batch, stats, batch_number, **kwargs)

    monkeypatch.setattr(Objective, "loss", poisoned_loss)
    monkeypatch.setattr(step_module, "loop_step", poisoned_step)


def test_a_divergence_stop_names_the_last_known_good_checkpoint_not_the_spiked_one(model_dir, tmp_path, diverging):
    config = tiny_config(model_dir, tmp_path, **{"saturation.enabled": False})
    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 2.*Last known good checkpoint: step 6 in") as e:
        run(config)
    assert "on_nonfinite=rollback" in str(e.value)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [6, 8]
    config.train.on_nonfinite, config.resume.allow_changes = "rollback", "train.on_nonfinite"  # the message's advice
    summary = run(config)
    assert summary["steps"] == 12 and [r["restored_step"] for r in summary["rollbacks"]] == [6]


def test_rollback_restores_the_last_known_good_checkpoint_skips_the_batch_and_halves_the_rate(
    model_dir, tmp_path, diverging, capsys
):
    """Saves at 2, 4, 6, 8; the window of save 8 holds the spike, so the NaN at step 9 rolls back to step 6 (kept
    beyond checkpoint.keep=1), the replay runs at half the rate, skips batch 8 and finishes; the steps before the
    rollback are those of a run that never rolled back (skip_batch, the same poison), bitwise."""
    from bitune_jax.train.step import make_schedule

    reference = tmp_path / "skip"
    run(tiny_config(model_dir, reference, **{"saturation.enabled": False, "train.on_nonfinite": "skip_batch"}))
    workdir = tmp_path / "rollback"
    summary = run(
        tiny_config(
            model_dir, workdir, **{"saturation.enabled": False, "train.on_nonfinite": "rollback", "checkpoint.keep": 1}
        )
    )
    out = capsys.readouterr().out
    assert "rolled back to step 6, the last known good checkpoint" in out
    assert summary["steps"] == 12 and summary["epochs"] == 4
    assert summary["rollbacks"] == [{"bad_batch": NAN, "restored_step": 6, "lr_scale": 0.5, "found_at_step": 9}]
    assert (workdir / "checkpoints.rolled_back" / "8").is_dir()  # the diverged trajectory's save, kept aside
    losses, expected = step_losses(workdir), step_losses(reference)
    assert sorted(losses) == [s for s in range(1, 13) if s != NAN + 1]  # each once; the skipped step has none
    assert {s: losses[s] for s in range(1, 8)} == {s: expected[s] for s in range(1, 8)}  # step 7 runs on step 6's
    assert losses[8] != expected[8]  # weights; update 7 already ran at half the rate
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rate = {r["step"]: r["learning_rate"] for r in rows if r["scope"] == "step"}
    schedule = make_schedule("cosine", 3e-3, 12, 0.1)
    assert rate[6] == pytest.approx(float(schedule(5)), rel=1e-6)
    assert rate[10] == pytest.approx(0.5 * float(schedule(9)), rel=1e-6)
    set_aside = [json.loads(line) for line in (workdir / "metrics.rolled_back.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in set_aside if r["scope"] == "step") == [7, 8]
    assert np.isfinite(summary["final_token_accuracy"])


def test_rollback_without_a_known_good_checkpoint_stops_and_says_so(model_dir, tmp_path, monkeypatch):
    import jax.numpy as jnp

    from bitune_jax.train.objectives import Objective

    loss = Objective.loss

    def poisoned(self, trainable, frozen, batch, **kwargs):
        value, metrics = loss(self, trainable, frozen, batch, **kwargs)
        return value + jnp.nan, metrics

    monkeypatch.setattr(Objective, "loss", poisoned)
    with pytest.raises(FloatingPointError, match="epoch 0, batch 0.*no known good checkpoint to roll back to"):
        run(tiny_config(model_dir, tmp_path, **{"train.on_nonfinite": "rollback"}))


def test_damaged_newest_checkpoint_falls_back_to_the_previous_step_bitwise(model_dir, tmp_path, capsys):
    """Every kind of damage to the newest step (its largest data file cut, deleted, zero-filled or with bytes
    flipped, its manifests cut, its folder emptied, a stray numeric folder) is named, moved aside, and the run
    resumes from the step before and logs the losses of an uninterrupted run, bitwise."""
    config = functools.partial(tiny_config, model_dir, **{"saturation.enabled": False})
    whole = run(config(tmp_path / "whole"))
    finished = tmp_path / "finished"
    run(config(finished))
    for kind in (*DAMAGE, "manifests"):
        workdir = tmp_path / kind
        shutil.copytree(finished, workdir)
        if kind == "manifests":
            for p in (workdir / "checkpoints" / "12").rglob("manifest.ocdbt"):  # cut as a full disk or a kill would
                p.write_bytes(p.read_bytes()[:20])
        else:
            damage(workdir / "checkpoints", 12, kind)
        newest = 13 if kind == "stray_folder" else 12
        capsys.readouterr()
        again = run(config(workdir))
        out = capsys.readouterr().out
        assert f"checkpoint at {workdir / 'checkpoints'} (step {newest})" in out, (kind, out)
        assert f"moved step {newest} aside to" in out, (kind, out)
        assert (workdir / "checkpoints.corrupt" / str(newest)).is_dir(), kind  # kept, not deleted
        if kind == "stray_folder":  # step 12 is intact: the finished run is found finished
            assert again["steps"] == whole["steps"], kind
            continue
        assert "resuming from step 10 instead" in out, (kind, out)
        assert step_losses(workdir) == step_losses(tmp_path / "whole"), kind  # steps 11 and 12 redone, bitwise
        assert again["history"] == whole["history"], kind


def test_metrics_never_hold_a_row_twice(model_dir, tmp_path):
    """A finished run run again appends nothing; a run killed before its first save (its rows written, no
    checkpoint) replays from step 0 and its rows replace the killed attempt's."""
    evals = {"eval.at_start": True, "eval.every_epochs": 4, "eval.num_items": 2, "eval.max_new_tokens": 4}
    config = functools.partial(tiny_config, model_dir, **{"saturation.enabled": False, **evals})

    def rows(workdir):
        return [
            (r["scope"], r["epoch"] if r["scope"] == "epoch" else None, r["step"])
            for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
        ]

    workdir = tmp_path / "run"
    run(config(workdir))
    first = (workdir / "metrics.jsonl").read_text()
    assert len(rows(workdir)) == len(set(rows(workdir))) and ("epoch", 0, 0) in rows(workdir)
    assert [r[1] for r in rows(workdir) if r[0] == "epoch"] == [0, 1, 2, 3, 4]
    run(config(workdir))
    assert (workdir / "metrics.jsonl").read_text() == first
    expected = rows(workdir)
    shutil.rmtree(workdir / "checkpoints")  # as a kill before the first save leaves the workdir
    run(config(workdir))
    assert rows(workdir) == expected


def test_weights_a_resume_is_allowed_to_change_are_not_refused_after_the_load(model_dir, tmp_path, capsys, monkeypatch):
    """`resume.allow_changes=model.name` lets a resume continue on other weights of the same architecture: the
    checkpoint's own fingerprint does not refuse what the record allowed."""
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "other_model"
    shutil.copytree(model_dir, other)
    (weights,) = other.glob("*.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    workdir = tmp_path / "run"
    run(tiny_config(model_dir, workdir, **{"saturation.enabled": False, "train.epochs": 2}))
    capsys.readouterr()
    allow = {"resume.allow_changes": "model.name,train.epochs", "saturation.enabled": False}
    summary = run(tiny_config(other, workdir, **allow))
    assert "resuming with a changed model.name:contents (allowed by resume.allow_changes)" in capsys.readouterr().out
    assert summary["steps"] == 12

    import bitune_jax
    from bitune_jax.train.checkpointing import CheckpointMismatchError

    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))  # another architecture
    monkeypatch.setattr(bitune_jax, "load", lambda *a, **k: pytest.fail("the weights loaded before the check"))
    allow["train.epochs"] = 5
    with pytest.raises(CheckpointMismatchError, match=r"\(step 12\) was trained on another architecture than"):
        run(tiny_config(other, workdir, **allow))


@pytest.mark.parametrize("writer", ["log", "checkpoint"])
def test_a_full_disk_is_one_clear_error_and_the_run_resumes(model_dir, tmp_path, monkeypatch, writer):
    """ENOSPC from the log writer, or wrapped by the checkpointer as orbax does, ends the run with one error naming
    the file and the free space; rerun once there is room, the run resumes and ends as an uninterrupted one."""
    import errno

    from bitune_jax.train.checkpointing import Checkpointer
    from bitune_jax.train.disk_full import DiskFullError
    from bitune_jax.train.run_log import RunLogger

    config = functools.partial(tiny_config, model_dir, **{"saturation.enabled": False})
    whole = run(config(tmp_path / "whole"))
    workdir = tmp_path / "full"
    target = tmp_path / "full" / ("metrics.jsonl" if writer == "log" else "checkpoints/4")
    cls, name = (RunLogger, "_write") if writer == "log" else (Checkpointer, "save")
    original = getattr(cls, name)

    def full_at_step_4(self, *args, **kwargs):
        step = args[0]["step"] if writer == "log" else args[0]
        if step == 4:
            error = OSError(errno.ENOSPC, "No space left on device", str(target))
            if writer == "log":
                raise error
            raise Exception("Encountered error while writing array") from error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, full_at_step_4)
    with pytest.raises(DiskFullError, match=rf"no space left on the device while writing {target} \(.* GiB free"):
        run(config(workdir))
    monkeypatch.undo()
    again = run(config(workdir))
    assert step_losses(workdir) == step_losses(tmp_path / "whole") and again["history"] == whole["history"]


def test_accumulated_steps_run_the_schedule_on_updates(model_dir, tmp_path):
    """accumulate=4 over 12 batches is 3 optimizer updates: the schedule spans 3 updates, and each logged step runs
    at the learning rate of the update it belongs to (the clock optax.MultiSteps gives the inner optimizer)."""
    from bitune_jax.train.step import make_schedule

    summary = run(
        tiny_config(
            model_dir, tmp_path, **{"train.accumulate": 4, "saturation.enabled": False, "train.warmup_frac": 0.34}
        )
    )
    assert summary["steps"] == 12 and summary["updates"] == 3 and summary["planned_updates"] == 3
    schedule = make_schedule("cosine", 3e-3, 3, 0.34)  # one warmup update, then cosine over 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["learning_rate"] for r in rows if r["scope"] == "step"}
    assert logged == pytest.approx({s: float(schedule((s - 1) // 4)) for s in range(1, 13)}, rel=1e-6)
    assert len(set(logged.values())) == 3


def test_saturation_anneals_to_the_end_and_resumes_inside_the_anneal(model_dir, tmp_path, capsys):
    """mode 'anneal': at saturation the rate falls linearly from where the schedule had it to 0 over 4 more updates
    and the run ends there; a resume from a checkpoint inside the anneal (the newest one damaged) ends the same."""
    from bitune_jax.train.step import make_schedule

    overrides = {
        "train.epochs": 40,
        "train.lr": 1e-2,
        "saturation.threshold": 0.6,
        "saturation.window": 0,
        "saturation.anneal_updates": 4,
    }
    summary = run(tiny_config(model_dir, tmp_path, **overrides))
    sat = summary["saturation"]
    start = 3 * sat["after_epoch"]  # 3 steps an epoch
    assert sat["mode"] == "anneal" and sat["anneal"] == {"start": start, "length": 4}
    assert summary["steps"] == start + 4 and sat["updates_saved"] == 120 - (start + 4)
    lr0 = float(make_schedule("cosine", 1e-2, 120, 0.1)(start))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["learning_rate"] for r in rows if r["scope"] == "step"]
    assert lrs[-4:] == pytest.approx([lr0, 0.75 * lr0, 0.5 * lr0, 0.25 * lr0], rel=1e-5)
    assert "annealing the learning rate" in capsys.readouterr().out
    losses = step_losses(tmp_path)
    for manifest in (tmp_path / "checkpoints" / str(start + 4)).rglob("manifest.ocdbt"):
        manifest.write_bytes(b"")
    again = run(tiny_config(model_dir, tmp_path, **overrides))
    assert again["steps"] == start + 4 and again["saturation"] == sat and step_losses(tmp_path) == losses


def test_saturation_observe_trains_every_epoch(model_dir, tmp_path):
    summary = run(
        tiny_config(
            model_dir,
            tmp_path,
            **{
                "train.epochs": 30,
                "train.lr": 1e-2,
                "saturation.mode": "observe",
                "saturation.threshold": 0.6,
                "saturation.window": 0,
            },
        )
    )
    assert summary["epochs"] == 30 and summary["steps"] == 90
    assert summary["saturation"]["epoch"] < 30 and summary["saturation"]["updates_saved"] == 0


def test_too_many_samples_for_the_file_fails_before_the_load(model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n' * 3)
    started = time.time()
    with pytest.raises(ValueError, match=r"config.data.num_samples=5, but .*train.jsonl holds 3 rows"):
        run(
            tiny_config(
                tmp_path / "no_model_here",
                tmp_path / "w",
                **{"data.source": "jsonl", "data.train_path": str(data), "data.num_samples": 5},
            )
        )
    assert time.time() - started < 5


def test_validation_rows_are_held_out_and_scored_each_epoch(model_dir, tmp_path):
    summary = run(
        tiny_config(
            model_dir,
            tmp_path,
            **{"data.val_size": 2, "train.epochs": 3, "eval.val_every_epochs": 2, "saturation.enabled": False},
        )
    )
    has = [("val_loss" in h, "val_token_accuracy" in h) for h in summary["history"]]
    assert has == [(False, False), (True, True), (True, True)]  # epoch 2, and the last
    assert 0 <= summary["history"][-1]["val_token_accuracy"] <= 1 and summary["history"][-1]["val_loss"] > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["scope"] == "epoch" and "epoch/val_loss" in r] == [2, 3]


def test_sigterm_mid_epoch_saves_exits_with_the_message_and_resumes_bitwise(model_dir, tmp_path):
    reference = launch(model_dir, tmp_path / "a")
    assert reference.wait(timeout=600) == 0, reference.stdout.read().decode()[-3000:]
    expected = step_losses(tmp_path / "a")
    victim = launch(model_dir, tmp_path / "b")
    wait_for_step(victim, tmp_path / "b", 4)  # mid-epoch 2 (3 steps an epoch)
    victim.send_signal(signal.SIGTERM)
    out = victim.communicate(timeout=300)[0].decode()
    assert victim.returncode != 0 and "SIGTERM: saved step" in out and "rerun the same command" in out, out[-2000:]
    saved = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert saved in [int(p.name) for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.isdigit()]
    assert not (tmp_path / "b" / "run.lock").exists()  # released on the way out
    resumed = launch(model_dir, tmp_path / "b")
    out = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0 and f"resuming after step {saved}" in out, out[-3000:]
    got = step_losses(tmp_path / "b")
    assert got == expected  # bitwise: the same floats at every step
