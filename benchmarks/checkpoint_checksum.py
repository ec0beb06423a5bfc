"""What a checkpoint's content checksums cost: SmolLM2-135M-Instruct's full fine-tuning state (float32 weights and
AdamW moments, 1.6 GB), checksummed on the device as `Checkpointer.save` does, against a host SHA-256 of the same
bytes (what a file-level checksum would cost) and against the save itself.

    python -m benchmarks.checkpoint_checksum [--repeats 3]

The device checksum reads each byte once, so its cost scales with the state's bytes per device: the last line
extrapolates to Olmo-3-7B's full fine-tuning state (7.3e9 parameters, 3 float32 copies, 87.6 GB) on one host of
this machine's measured throughput. On an accelerator it runs at memory bandwidth instead.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile

import jax
import numpy as np

import bitune_jax as bj
from benchmarks.timing import best_of
from bitune_jax.train import checksums
from bitune_jax.train.checkpointing import Checkpointer
from bitune_jax.train.step import init_state, make_optimizer, make_schedule

OLMO3_7B_STATE_BYTES = 7.3e9 * 4 * 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lm = bj.load("smollm2-135m-instruct")
    optimizer = make_optimizer(
        make_schedule("constant", 1e-5, 10, 0.0), b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=1.0
    )
    state = init_state(jax.tree.map(lambda x: x.astype("float32"), lm.params), optimizer)
    leaves = [leaf for leaf in jax.tree.leaves(state) if hasattr(leaf, "nbytes")]
    nbytes = sum(int(leaf.nbytes) for leaf in leaves)
    print(f"state: {len(leaves)} arrays, {nbytes / 1e9:.2f} GB", flush=True)

    device_s = best_of(lambda: checksums.checksums(state), args.repeats)
    print(f"device checksum: {device_s:.3f} s ({nbytes / device_s / 1e9:.2f} GB/s)", flush=True)

    def sha256() -> None:
        h = hashlib.sha256()
        for leaf in leaves:
            h.update(np.asarray(leaf).data)

    host_s = best_of(sha256, args.repeats)
    print(f"host sha256: {host_s:.3f} s ({nbytes / host_s / 1e9:.2f} GB/s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        with Checkpointer(tmp, keep=1, async_save=False) as ckpt:
            step = iter(range(1000))  # the warm-up call warms orbax's threads and tensorstore
            save_s = best_of(lambda: ckpt.save(next(step), state), args.repeats)
    print(f"save (synchronous, checksums included): {save_s:.3f} s", flush=True)

    print(f"device_checksum_s: {device_s:.3f}")
    print(f"host_sha256_s: {host_s:.3f}")
    print(f"checksum_share_of_save: {device_s / save_s:.3f}")
    print(f"olmo3_7b_full_state_checksum_s_at_this_rate: {OLMO3_7B_STATE_BYTES / (nbytes / device_s):.1f}")


if __name__ == "__main__":
    main()
