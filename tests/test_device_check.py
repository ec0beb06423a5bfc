"""The prepared device run works before any device time is spent: `benchmarks.device_check --smoke` on CPU runs
every part (the kernels in interpret mode, each benchmark at a tiny size) and writes one JSON and one log."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_device_check_smoke_runs_every_part(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", "--out", str(tmp_path), "--smoke", "--budget_s", "1200"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["smoke"] and report["platform"] == "cpu"
    assert {k: v["status"] for k, v in report["parts"].items()} == dict.fromkeys(
        ["kernels", "attention", "train_step", "bitune_step", "decode"], "ok"
    ), json.dumps(report["parts"], indent=1)[:3000]
    kernels = report["parts"]["kernels"]["results"]
    assert {r["mask"] for r in kernels} == {"causal", "bitune_prefix", "segments", "sliding_window"}
    assert all(r["status"] == "equal" for r in kernels), kernels
    assert report["parts"]["decode"]["figures"]["decode tokens/s batch 1"] > 0
    assert report["parts"]["train_step"]["figures"]["full batch 1 tokens/s"] > 0
    log = (tmp_path / "device_check.log").read_text()
    assert log.splitlines()[-1] == "parts ok: 5"
