"""One process of a two-process run (gloo) entering `hold_workdir`; writes what it saw as JSON.

python -m tests.train.lock_worker --workdir DIR --out r.json --process_id 0 --port N
"""

import argparse
import json
import pathlib

import jax

from bitune_jax.train.workdir_lock import LOCK_NAME, WorkdirLockedError, hold_workdir


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{args.port}", 2, args.process_id)
    result = {}
    try:
        with hold_workdir(args.workdir):
            result["entered"] = True
    except WorkdirLockedError as e:
        result["error"] = str(e)
    result["lock_after"] = (pathlib.Path(args.workdir) / LOCK_NAME).exists()
    pathlib.Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
