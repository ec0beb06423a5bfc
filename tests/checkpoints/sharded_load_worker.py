"""Load a Hugging Face directory straight into a mesh and write, per parameter, its sharding, whether it equals
the host load, and the largest single read from disk as a fraction of the tensor it came from.

Used by test_sharded_load.py in a subprocess, so XLA_FLAGS (fake CPU devices) and jax.distributed take effect.
    python -m tests.checkpoints.sharded_load_worker --model DIR --mesh 1,2,2,2 --out r.json \
        [--process_id 0 --num_processes 2 --port N]
"""

import argparse
import json

import jax
import numpy as np

import bitune_jax as bj
from bitune_jax.checkpoints import hf
from bitune_jax.train.sharding import make_mesh


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--mesh", default="1,1,1,1", help="data,fsdp,sequence,tensor")
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
    data, fsdp, sequence, tensor = map(int, args.mesh.split(","))
    mesh = make_mesh(data=data, fsdp=fsdp, sequence=sequence, tensor=tensor)

    reads: dict[str, list[int]] = {}  # HF tensor name -> elements of every read
    whole_reads = []  # tensors read through `get` (the whole tensor)
    read, get = hf.TensorSource.read, hf.TensorSource.get

    def logged_read(self, name, index):
        out = read(self, name, index)
        reads.setdefault(name, []).append(int(out.size))
        return out

    def logged_get(self, name):
        whole_reads.append(name)
        return get(self, name)

    hf.TensorSource.read, hf.TensorSource.get = logged_read, logged_get
    lm = bj.load(args.model, mesh=mesh)
    hf.TensorSource.read, hf.TensorSource.get = read, get
    _, host = hf.load_hf(args.model)

    cfg = lm.cfg
    plan = hf.tensor_plan(cfg, "model.")
    sizes = {
        n: int(np.prod(hf.TensorSource(hf.pathlib.Path(args.model)).shape(n)))
        for names, _ in plan.values()
        for n in (names if isinstance(names, tuple) else (names,))
    }
    flat = {"/".join(str(k.key) for k in kp): x for kp, x in jax.tree_util.tree_flatten_with_path(lm.params)[0]}
    flat_host = {"/".join(str(k.key) for k in kp): x for kp, x in jax.tree_util.tree_flatten_with_path(host)[0]}
    out = {"whole_reads": whole_reads, "processes": jax.process_count(), "params": {}}
    for path, x in flat.items():
        names = plan[path][0]
        names = names if isinstance(names, tuple) else (names,)
        local = [np.asarray(s.data) for s in x.addressable_shards]
        expect = [flat_host[path][s.index] for s in x.addressable_shards]
        out["params"][path] = {
            "spec": str(x.sharding.spec),
            "fully_replicated": bool(x.sharding.is_fully_replicated),
            "equal": all(np.array_equal(a, b) for a, b in zip(local, expect, strict=True)),
            "max_read_fraction": max(max(reads[n]) / sizes[n] for n in names),
            "elements_read": sum(sum(reads[n]) for n in names),
            "addressable_elements": sum(a.size for a in local),
            "global_elements": int(x.size),
        }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
