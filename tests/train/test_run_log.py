"""RunLogger files (JSONL, TensorBoard, PNG), the progress bar, throughput and the MFU helpers."""

import io
import json

import jax.numpy as jnp
import numpy as np
import pytest

from bitune_jax.train.performance import Throughput, measure_matmul_peak_flops, mfu, model_flops_per_token
from bitune_jax.train.run_log import ProgressBar, RunLogger

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_epochs(logger, epochs=3, steps_per_epoch=2):
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            logger.log(
                step,
                {
                    "loss": jnp.float32(2.0 / step),
                    "token_accuracy": np.float64(0.3 * epoch),
                    "per_example_loss": jnp.ones(3),
                    "finite": jnp.bool_(True),
                },
                epoch=epoch,
            )
        logger.log_epoch(epoch, step, {"loss": 2.0 / epoch, "token_accuracy": 0.3 * epoch})
    return step


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logger_writes_jsonl_tensorboard_and_png(tmp_path):
    logger = RunLogger(tmp_path, enabled=True)
    run_epochs(logger)
    logger.log(7, {"loss": float("nan")})
    png = logger.close(saturation_epoch=2)
    rows = read_rows(tmp_path / "metrics.jsonl")
    steps = [r for r in rows if r["scope"] == "step"]
    assert len(steps) == 7 and steps[0] == {
        "scope": "step",
        "step": 1,
        "epoch": 1.0,
        "loss": 2.0,
        "token_accuracy": pytest.approx(0.3),
        "finite": 1.0,
    }
    assert steps[-1]["loss"] is None  # non-finite -> null: strict JSON
    epochs = [r for r in rows if r["scope"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and epochs[1]["epoch/loss"] == 1.0
    for r in rows:
        assert all(isinstance(v, float | int | str) or v is None for v in r.values())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert png == tmp_path / "token_accuracy_loss.png"
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_resume_drops_rows_after_restored_step_and_keeps_epoch_history(tmp_path):
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False)
    run_epochs(logger)  # steps 1..6, epochs at steps 2, 4, 6
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"scope": "step", "st')  # a line cut by SIGKILL
    resumed = RunLogger(tmp_path, enabled=True, tensorboard=False, resume_step=4)
    assert sorted(resumed.epochs) == [1, 2]
    resumed.log(5, {"loss": 0.1})
    resumed.close()
    rows = read_rows(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in rows) == 5 and [r["step"] for r in rows].count(5) == 1


def test_resume_drops_the_epochs_the_checkpoint_had_not_closed(tmp_path):
    """A checkpoint saved at an epoch's last step before the epoch closed: the resumed run logs that epoch again,
    so its old row goes; -1 (a fresh start) drops every epoch row, epoch 0 included."""
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False)
    logger.log_epoch(0, 0, {"loss": 3.0})
    run_epochs(logger)  # steps 1..6, epochs 1-3 at steps 2, 4, 6
    logger.close()
    resumed = RunLogger(tmp_path, enabled=True, tensorboard=False, resume_step=4, closed_epochs=1)
    assert sorted(resumed.epochs) == [0, 1]
    resumed.close()
    rows = read_rows(tmp_path / "metrics.jsonl")
    assert [(r["scope"], r["step"]) for r in rows if r["scope"] == "epoch"] == [("epoch", 0), ("epoch", 2)]
    assert max(r["step"] for r in rows) == 4
    RunLogger(tmp_path, enabled=True, tensorboard=False, resume_step=0, closed_epochs=-1).close()
    assert read_rows(tmp_path / "metrics.jsonl") == []


def test_disabled_logger_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    logger = RunLogger(workdir, enabled=False)
    run_epochs(logger)
    logger.log_text("config", "x")
    assert logger.close(saturation_epoch=1) is None
    assert not workdir.exists()


def test_progress_bar_plain_lines_off_a_tty():
    stream = io.StringIO()  # not a TTY, like a CI log
    bar = ProgressBar(total=3, enabled=True, stream=stream, interval_s=0.0)
    for step in range(1, 4):
        bar.update(epoch=1, step=step, loss=1.23456, token_accuracy=0.5, tokens_per_s=1234.5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert lines[-1] == "[train] 3/3 epoch=1 step=3 loss=1.235 tok_acc=0.5 tok/s=1234"
    silent = io.StringIO()
    ProgressBar(total=3, enabled=False, stream=silent).update(loss=1.0)
    assert silent.getvalue() == ""


def test_throughput_window():
    t = Throughput(window=2)
    assert t.update(100, now=0.0) is None
    assert t.update(100, now=1.0) == 100.0
    assert t.update(300, now=2.0) == 200.0
    assert t.update(300, now=3.0) == 300.0  # the window forgot the first step


def test_model_flops_per_token_formula():
    n, t, layers, d = 1_000_000, 512, 4, 64
    attention = 12 * layers * d * t
    assert model_flops_per_token(n, t, layers, d, backward_weight_grads=True) == 6 * n + attention
    assert model_flops_per_token(n, t, layers, d, backward_weight_grads=False) == 4 * n + attention
    assert model_flops_per_token(n, t, layers, d, True, causal=True) == 6 * n + attention / 2
    assert mfu(tokens_per_s=1000, flops_per_token=6e6, peak_flops_per_s=1.2e10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seq_len"):
        model_flops_per_token(n, -1, layers, d)


def test_measured_peak_is_the_best_timed_matmul(monkeypatch):
    """2 size^3 FLOPs over the fastest of the timed runs (the warm-up and compile are not timed)."""
    from bitune_jax.train import performance

    durations = iter([0.0, 1.0, 10.0, 10.25, 20.0, 20.5])  # three runs: 1.0 s, 0.25 s, 0.5 s
    monkeypatch.setattr(performance.time, "perf_counter", lambda: next(durations))
    flops = measure_matmul_peak_flops(jnp.float32, size=128, repeats=3)
    assert flops == pytest.approx(2 * 128**3 / 0.25)
    assert next(durations, None) is None  # exactly the three runs were timed
