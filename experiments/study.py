"""Run a study's grid (a config file with `get_config()` and `get_sweep()`) and collect what each point measured.

Shared by the repetition and Bitune studies: a point's run is `bitune_jax.train.loop.run` on the base config with the
point's overrides; a point whose workdir already holds a `summary.json` from the same settings is not run again, so
an interrupted study resumes by running the same command (an unfinished point starts over).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import pathlib
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from ml_collections import ConfigDict

from bitune_jax.train.loop import run


def load_config_module(path: str | pathlib.Path):
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("get_config", "get_sweep"):
        if not hasattr(module, name):
            raise SystemExit(f"{path} has no {name}(): a study config defines both")
    return module


def point_config(config: ConfigDict, point: Mapping[str, Any]) -> ConfigDict:
    """`config` with the point's dotted-key overrides; an unknown key is an error naming it."""
    c = copy.deepcopy(config)
    c.unlock()
    known = set(_flatten(c.to_dict()))
    unknown = sorted(set(point) - known)
    if unknown:
        raise KeyError(f"sweep point sets unknown config keys {unknown}")
    c.update_from_flattened_dict(dict(point))
    c.lock()
    return c


def run_points(config: ConfigDict, sweep: list[dict[str, Any]],
               runner: Callable[[ConfigDict], dict[str, Any]] = run) -> list[dict[str, Any]]:
    """Each point's summary (with its `point` overrides and `config`), running only the points not yet done."""
    summaries = []
    for point in sweep:
        c = point_config(config, point)
        settings = json.loads(json.dumps(c.to_dict()))  # as it reads back from JSON (tuples become lists)
        workdir = pathlib.Path(c.workdir)
        path = workdir / "summary.json"
        done = json.loads(path.read_text()) if path.exists() else None
        if done is None or done.get("config") != settings:
            shutil.rmtree(workdir, ignore_errors=True)  # a point is run whole: no resuming another setting's state
            print(f"=== study point {point}", flush=True)
            runner(c)
            done = json.loads(path.read_text())
            done["config"] = settings
            path.write_text(json.dumps(done, indent=2))
        summaries.append({**done, "point": dict(point)})
    return summaries


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
