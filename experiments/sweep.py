"""Print (or run, one after another) the commands of a config's sweep (`get_sweep()` in the config file):

    python -m experiments.sweep experiments/configs/olmo7b_rep.py[:platform] [--sweep=NAME] [--run] \
        [extra --config.* flags]

`--sweep=NAME` is passed to `get_sweep(NAME)` (e.g. olmo7b_rep's `triangle`); without it, `get_sweep()`.
"""

import importlib.util
import shlex
import subprocess
import sys


def main(argv: list[str]) -> None:
    if len(argv) < 1:
        raise SystemExit(__doc__)
    target, rest = argv[0], argv[1:]
    run = "--run" in rest
    kinds = [a.split("=", 1)[1] for a in rest if a.startswith("--sweep=")]
    extra = [a for a in rest if a != "--run" and not a.startswith("--sweep=")]
    path = target.split(":")[0]
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SystemExit(f"{path} has no get_sweep()")
    points = list(module.get_sweep(*kinds))
    given = {a[len("--config.") :].split("=", 1)[0] for a in extra if a.startswith("--config.")}
    overridden = sorted(given & {k for point in points for k in point})
    if overridden:  # the point's flag comes last and would win without a word
        raise SystemExit(
            f"{', '.join('--config.' + k for k in overridden)}: the sweep's points set these keys themselves, so the "
            "flag would be overridden; drop it, or change the sweep in the config file"
        )
    argument = target.split(":", 1)[1:]
    data = module.get_config(*argument).data
    source = data.train_path if data.source == "jsonl" else data.hf.path if data.source == "hf" else "synthetic"
    print(  # what every point reads, so a grid is checked against the split files before anything runs
        f"# data: {source} (pool_order={data.pool_order}, order={data.order}, val_size={data.val_size})", flush=True
    )
    for point in points:
        cmd = [
            sys.executable,
            "-m",
            "experiments.run",
            f"--config={target}",
            *extra,
            *(f"--config.{k}={v}" for k, v in point.items()),
        ]
        print(shlex.join(cmd), flush=True)
        if run:
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
