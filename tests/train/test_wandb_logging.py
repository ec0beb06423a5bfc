"""RunLogger's optional W&B sink, read back from the offline run it writes: scalars, steps, config, summary, resume.

wandb 0.31 ships no Python reader for a run's `.wandb` file, so `offline_run` parses it here: a LevelDB log
(a 7-byte file header, 32 KiB blocks of checksummed chunks) of `wandb_internal_pb2.Record` protobufs.
"""

import json
import pathlib
import struct
import subprocess
import sys
import time

import pytest

from bitune_jax.train.loop import run
from bitune_jax.train.run_log import WANDB_ID_NAME, RunLogger
from bitune_jax.train.spec import WandbSpec
from bitune_jax.train.validate import ConfigError, validate
from experiments.configs.common import base
from tests.train.tiny_run import smollm2_tokenizer, tiny_config, write_tiny_model

pytestmark = pytest.mark.integration  # the integration tier: python -m pytest -m integration

pytest.importorskip("wandb")

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFLINE = WandbSpec(project="t", entity="", mode="offline")
BLOCK, HEADER = 32768, 7  # LevelDB log block size and chunk header (checksum u32, length u16, type u8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"), smollm2_tokenizer())


@pytest.fixture(autouse=True)
def offline_env(tmp_path, monkeypatch):
    """wandb never reaches the network nor the home directory."""
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR"):
        (home / name.lower()).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(f"WANDB_{name}", str(home / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def records(path: pathlib.Path):
    """The protobuf records of one `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, _magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and version == 0, (ident, version)
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zeroed space past the last record
            break
        pending += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def finished_records(path: pathlib.Path, timeout: float = 30.0) -> list:
    """The records once the run's `exit` record is on disk: `wandb.finish()` can return before wandb's service
    process has flushed the file."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(records(path)) if path.stat().st_size > HEADER else []
        if (found and found[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def offline_run(workdir: pathlib.Path, index: int = -1) -> dict:
    """History rows, config, summary and run id of the `index`-th offline run (by start time) under `workdir`."""
    runs = sorted((workdir / "wandb").glob("offline-run-*/run-*.wandb"), key=lambda p: p.parent.name)
    assert runs, sorted(p.name for p in workdir.rglob("*"))
    out = {"history": [], "config": {}, "summary": {}, "run_id": None}
    for record in finished_records(runs[index]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = record.run.run_id
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in record.summary.update})
    return out


def test_offline_run_holds_the_logged_scalars_steps_config_and_summary(tmp_path):
    config = {"seed": 3, "train": {"lr": 0.001, "epochs": 1}}
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False, wandb=OFFLINE, config=config)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 2.0 / step, "token_accuracy": 0.25 * step, "grad_norm": float("nan")})
    logger.log_epoch(1, 3, {"loss": 1.5, "token_accuracy": 0.5, "eval/custom": 0.75})
    plot = logger.close(summary={"steps": 3, "final_token_accuracy": 0.5, "saturation": None})
    assert plot is not None and plot.exists()

    wb = offline_run(tmp_path)
    assert wb["run_id"] == (tmp_path / WANDB_ID_NAME).read_text().strip()
    assert wb["config"]["seed"] == 3 and wb["config"]["train"] == {"lr": 0.001, "epochs": 1}
    steps = [r for r in wb["history"] if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["train/loss"] for r in steps] == pytest.approx([2.0, 1.0, 2.0 / 3])
    assert [r["train/token_accuracy"] for r in steps] == pytest.approx([0.25, 0.5, 0.75])
    assert not any("train/grad_norm" in r for r in wb["history"])  # NaN is left out, as in TensorBoard
    (epoch,) = [r for r in wb["history"] if "epoch/loss" in r]
    assert epoch["epoch"] == 1 and epoch["step"] == 3
    assert epoch["epoch/token_accuracy"] == 0.5 and epoch["epoch/eval/custom"] == 0.75
    assert any(r.get("plot/token_accuracy_loss/_type") == "image-file" for r in wb["history"])  # nested keys
    assert wb["summary"]["steps"] == 3 and wb["summary"]["final_token_accuracy"] == 0.5
    assert "saturation" not in wb["summary"]


def test_rewind_replays_steps_as_new_rows_and_a_resume_keeps_the_run_id(tmp_path):
    """W&B cannot delete rows: after a rollback to step 1 the replayed step 2 is a second row, not dropped."""
    logger = RunLogger(tmp_path, enabled=True, tensorboard=False, wandb=OFFLINE)
    logger.log(1, {"loss": 3.0})
    logger.log(2, {"loss": 9.0})
    logger.rewind(1)
    logger.log(2, {"loss": 2.0})
    logger.close()
    wb = offline_run(tmp_path)
    rows = [(r["step"], r.get("train/loss"), r.get("rollback_to_step")) for r in wb["history"] if "step" in r]
    assert rows == [(1, 3.0, None), (2, 9.0, None), (1, None, 1), (2, 2.0, None)]

    time.sleep(1.1)  # offline run directories are named by the second they start
    resumed = RunLogger(tmp_path, enabled=True, tensorboard=False, resume_step=2, wandb=OFFLINE)
    resumed.log(3, {"loss": 1.0})
    resumed.close()
    again = offline_run(tmp_path, index=-1)
    assert again["run_id"] == wb["run_id"] and len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2
    assert [(r["step"], r["train/loss"]) for r in again["history"] if "train/loss" in r] == [(3, 1.0)]


def test_disabled_writes_nothing_for_wandb_and_never_imports_it(tmp_path):
    workdir = tmp_path / "run"
    script = (
        "import sys, pathlib\n"
        "from bitune_jax.train.run_log import RunLogger\n"
        f"w = pathlib.Path({str(workdir)!r})\n"
        "for spec in (None, {'project': 'p', 'entity': '', 'mode': 'disabled'}):\n"
        "    logger = RunLogger(w, enabled=True, tensorboard=False, wandb=spec, config={'a': 1})\n"
        "    logger.log(1, {'loss': 1.0}); logger.log_epoch(1, 1, {'loss': 1.0}); logger.close(summary={'s': 1})\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
    assert (workdir / "metrics.jsonl").exists()
    assert not [p for p in workdir.rglob("*") if "wandb" in p.name], sorted(workdir.rglob("*"))


def test_validate_names_the_wandb_keys():
    c = base()
    c.log.wandb.mode = "offline"
    with pytest.raises(ConfigError, match=r"config\.log\.wandb\.project is empty"):
        validate(c, 1)
    c.log.wandb.mode = "cloud"
    with pytest.raises(ConfigError, match=r"config\.log\.wandb\.mode='cloud'"):
        validate(c, 1)


def test_training_run_logs_the_same_step_losses_to_wandb_as_to_the_jsonl(model_dir, tmp_path):
    workdir = tmp_path / "run"
    overrides = {"saturation.enabled": False, "log.wandb.mode": "offline", "log.wandb.project": "t"}
    summary = run(tiny_config(model_dir, workdir, **overrides))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    jsonl = {r["step"]: r["loss"] for r in rows if r["scope"] == "step"}
    assert len(jsonl) == summary["steps"] == 12

    logged = offline_run(workdir)
    wandb_losses = {r["step"]: r["train/loss"] for r in logged["history"] if "train/loss" in r}
    assert wandb_losses.keys() == jsonl.keys()
    assert [wandb_losses[s] for s in sorted(jsonl)] == pytest.approx([jsonl[s] for s in sorted(jsonl)], rel=1e-6)
    epochs = sorted(r["epoch"] for r in logged["history"] if "epoch/token_accuracy" in r)
    assert epochs == [1, 2, 3, 4]
    assert logged["config"]["model"]["name"] == str(model_dir) and logged["config"]["log"]["wandb"]["mode"] == "offline"
    assert logged["summary"]["steps"] == 12
