"""The training loop end to end on a tiny model: outputs, exact resume after SIGKILL, saturation stop, errors."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bitune_jax.train.loop import run
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "train" / "tiny_config.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


def step_losses(workdir):
    rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["scope"] == "step"}


def launch(model_dir, workdir, epochs=4):
    cmd = [sys.executable, "-m", "experiments.run", f"--config={CONFIG}", f"--config.model.name={model_dir}",
           f"--config.workdir={workdir}", f"--config.train.epochs={epochs}"]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


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


def test_saturation_stops_a_run_that_memorizes(model_dir, tmp_path):
    summary = run(tiny_config(model_dir, tmp_path, **{"train.epochs": 40, "train.lr": 1e-2,
                                                      "saturation.threshold": 0.6, "saturation.window": 0}))
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
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once step 5 is logged (checkpoints exist at 2 and 4)
        metrics = tmp_path / "b" / "metrics.jsonl"
        if metrics.exists() and any(s >= 5 for s in step_losses(tmp_path / "b")):
            break
        assert victim.poll() is None, victim.stdout.read().decode()[-3000:]
        time.sleep(0.2)
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
    bad = subprocess.run([sys.executable, "-m", "experiments.run", f"--config={CONFIG}", "--config.train.epoch=3"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "epoch" in bad.stderr
    with pytest.raises(ValueError, match=r"config.data.train_path=.*missing.jsonl.*no such file"):
        run(tiny_config(model_dir, tmp_path / "x", **{"data.source": "jsonl",
                                                   "data.train_path": str(tmp_path / "missing.jsonl")}))
    (tmp_path / "bad.jsonl").write_text('{"prompt": "hi", "response": "yo"}\n{"prompt": "hi"\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        run(tiny_config(model_dir, tmp_path / "y", **{"data.source": "jsonl",
                                                   "data.train_path": str(tmp_path / "bad.jsonl")}))
    with pytest.raises(ValueError, match="data.train_path is empty"):
        run(tiny_config(model_dir, tmp_path / "w", **{"data.source": "jsonl"}))
    with pytest.raises(ValueError, match="config.model.name is empty"):
        run(tiny_config("", tmp_path / "v"))
    small = write_tiny_model(tmp_path / "small_vocab", smollm2_tokenizer(), vocab_size=1000)
    with pytest.raises(ValueError, match=r"49152 tokens but the model's embedding has 1000 rows"):
        run(tiny_config(small, tmp_path / "u"))
    run(tiny_config(model_dir, tmp_path / "z", **{"train.epochs": 1}))
    with pytest.raises(ValueError, match="checkpoint from another model"):
        run(tiny_config(model_dir, tmp_path / "z", **{"objective": "peft", "train.epochs": 1}))


def test_nan_loss_stops_with_last_good_checkpoint(model_dir, tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* Last good checkpoint: step \d+"):
        run(tiny_config(model_dir, tmp_path, **{"train.lr": 1e30, "train.clip": 0.0, "train.epochs": 3}))
    assert np.isfinite(list(step_losses(tmp_path).values())).all()


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
        summary = run(tiny_config(model_dir, tmp_path / str(samples), **{
            "data.num_samples": samples, "train.epochs": 2, "log.every_steps": 1000, "checkpoint.every_steps": 0,
            "saturation.enabled": False, "log.tensorboard": False}))
        assert summary["steps"] == 2 * samples
        counts.append(reads[0] - before)
    assert counts[0] == counts[1], counts


def test_divergence_between_reads_stops_at_the_first_bad_batch(model_dir, tmp_path):
    """No read between steps: the first non-finite step freezes the state on the device, and the next read (here
    the epoch end) stops the run naming that batch; no checkpoint was saved, and the message says so."""
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at epoch 0, batch \d.* Last good checkpoint: "
                                                 r"none yet"):
        run(tiny_config(model_dir, tmp_path, **{"train.lr": 1e30, "train.clip": 0.0, "train.epochs": 3,
                                                "log.every_steps": 1000, "checkpoint.every_steps": 0}))
    assert not (tmp_path / "summary.json").exists()
