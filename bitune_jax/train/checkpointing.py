"""Training checkpoints: a thin wrapper over orbax's `CheckpointManager` and a model fingerprint.

A checkpoint step holds two items:
- `state`: the pytree the loop resumes from (trainable params or adapters, optimizer state, step counter, RNG key),
  written by `StandardSave` so each process writes its own shards and restore can place arrays on new shardings.
- `meta`: JSON, `{"meta": <the caller's dict>, "fingerprint": ..., "prng_keys": ..., "checksums": ...}`. The
  caller's dict carries what is not an array: the data iterator state (`{"epoch", "index"}`) and the run config.

Every array's content checksum (`checksums`) is saved with it and checked after a restore, so a step whose files
changed on disk is damage even where orbax decodes the bytes; damaged steps are moved aside and the next older one
restored (`restore_newest_readable`).

Typed PRNG keys in the state are stored as their key data and come back as typed keys (`prng_keys`).

The fingerprint (`model_fingerprint`) stops a resume from silently loading another model's weights: restore compares
it field by field and names the field and the checkpoint directory.

Multi-host: every process calls `save` and `restore` (orbax coordinates the writes); `meta` must be the same on all.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from bitune_jax.train import checksums, prng_keys

PyTree = Any


class CheckpointMismatchError(ValueError):
    """The checkpoint does not belong to the current model or does not fit the requested state tree."""


class CheckpointCorruptError(OSError):
    """A checkpoint step's files cannot be read (truncated, cut by a kill or a full disk, edited)."""


_TENSORSTORE_DAMAGE = ("DATA_LOSS", "Error decoding", "Error reading", "Error opening", "NOT_FOUND")


def exception_chain(e: BaseException) -> list[BaseException]:
    """`e`, its causes and contexts, and the members of exception groups: orbax wraps tensorstore's error (which
    names the file) in a bare `Exception`, sometimes inside a group."""
    seen, todo = [], [e]
    while todo:
        x = todo.pop(0)
        if x is None or any(x is y for y in seen):
            continue
        seen.append(x)
        todo += [x.__cause__, x.__context__, *getattr(x, "exceptions", ())]
    return seen


def _damage(e: BaseException) -> str | None:
    """A short reason if `e` (or an error it wraps) says the files are damaged (rather than that they hold another
    tree), else None."""
    for x in exception_chain(e):
        text = str(x).split(" [tensorstore_spec")[0]
        if isinstance(x, (json.JSONDecodeError, UnicodeDecodeError, EOFError, OSError)) or any(
            m in text for m in _TENSORSTORE_DAMAGE
        ):
            text = f"{type(x).__name__}: {text}"
            return text if len(text) <= 400 else "..." + text[-400:]  # the end names the file and what is wrong
    return None


# ----------------------------------------------------------------------------------------------- fingerprint


def model_fingerprint(model_name: str, model_config: Any, params: PyTree) -> dict[str, Any]:
    """What identifies a model for resuming: its name, a hash of its architecture config, and parameter shapes.

    model_name: the weights' identity; the trainer passes `run_record.weights_identity`, a content hash, so the same
        weights under another path (a trailing slash, a relative path, a copy) still resume.

    model_config: the architecture (a dataclass, mapping or `ConfigDict`), not the run config, so changing a
        learning rate still resumes while changing a layer count does not.
    params: the trainable tree (arrays or `jax.ShapeDtypeStruct`s); shapes, not dtypes, are compared, so a run may
        switch between bf16 and float32 master weights and keep its checkpoint.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    shapes = {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in flat}
    return {
        "model_name": str(model_name),
        "config_hash": config_hash(model_config),
        "num_params": int(sum(int(np.prod(s)) for s in shapes.values())),
        "param_shapes": shapes,
    }


def config_hash(model_config: Any) -> str:
    """The architecture's identity in a fingerprint: a hash of the model config."""
    return hashlib.sha256(_canonical_json(_to_plain(model_config)).encode()).hexdigest()[:16]


def saved_fingerprint(directory: str | Path, step: int) -> dict[str, Any] | None:
    """The fingerprint saved with `step`, read from its JSON alone (before any model loads); None if unreadable
    (a damaged step is dealt with when the run restores)."""
    try:
        record = json.loads((Path(directory) / str(step) / "meta" / "metadata").read_text())
        return record.get("fingerprint") if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def check_fingerprint(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any], where: str, unchecked: Collection[str] = ()
) -> None:
    """Raise `CheckpointMismatchError` naming `where` and the first field that differs (`unchecked` fields aside)."""
    if saved is None:
        raise CheckpointMismatchError(
            f"checkpoint at {where} has no model fingerprint, so it cannot be checked against the current model; "
            "restore with a Checkpointer built without `fingerprint=` if you are sure it fits"
        )
    current = json.loads(json.dumps(current))  # tuples -> lists, as they were saved
    first = ["model_name", "config_hash", "param_shapes"]  # the most telling fields are reported first
    fields = (set(saved) | set(current)) - set(unchecked)
    for field in sorted(fields, key=lambda f: (first.index(f) if f in first else len(first), f)):
        if field not in saved or field not in current:
            side = "saved checkpoint" if field not in saved else "current model"
            raise CheckpointMismatchError(
                f"checkpoint from another model at {where}: field {field!r} is missing from the {side}'s fingerprint"
            )
        if field == "param_shapes" and saved[field] != current[field]:
            s, c = saved[field], current[field]
            for path in sorted(set(s) | set(c)):
                if s.get(path) != c.get(path):
                    raise CheckpointMismatchError(
                        f"checkpoint from another model at {where}: field 'param_shapes' differs at parameter "
                        f"{path}: saved {s.get(path, 'absent')}, current {c.get(path, 'absent')}"
                    )
        if saved[field] != current[field]:
            raise CheckpointMismatchError(
                f"checkpoint from another model at {where}: field {field!r} differs: saved {saved[field]!r}, "
                f"current {current[field]!r}; point the run at a fresh workdir or at the matching model"
            )


# ---------------------------------------------------------------------------------------------- checkpointer


def committed_steps(directory: str | Path) -> list[int]:
    """Steps saved under `directory`, read from the folder names alone (orbax writes a step under a temporary name
    and renames it to the bare step number when it commits), so a run can tell it is resuming before it loads."""
    directory = Path(directory).expanduser()
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


class Checkpointer:
    """Save and restore `(state, meta)` pairs by step, keeping the last `keep`.

    directory: where step folders go (created if missing; must be absolute for orbax, so it is resolved here).
    keep: how many of the latest steps to keep (older ones are deleted after a newer save commits); steps named
        in `protect` are kept as well (the loop's last known good checkpoint).
    async_save: write in a background thread. `save` returns once arrays are copied off the device, so the loop
        may donate or overwrite the state right after; call `wait()` before reading the files or exiting.
    fingerprint: the current model's `model_fingerprint`; saved with every step and checked by `restore`.
        None saves no fingerprint and skips the check.
    unchecked: fingerprint fields `restore` does not compare (the loop passes `model_name` when the run's record
        allowed the weights to change, `resume.allow_changes=model.name`).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 3,
        async_save: bool = True,
        fingerprint: Mapping[str, Any] | None = None,
        unchecked: Collection[str] = (),
    ) -> None:
        if keep < 1:
            raise ValueError(f"Checkpointer keep must be >= 1, got {keep}")
        self.directory = Path(directory).expanduser().resolve()
        self.fingerprint = None if fingerprint is None else json.loads(json.dumps(dict(fingerprint)))
        self.unchecked = tuple(unchecked)
        self._protected: set[int] = set()
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(keep), _Protected(self._protected)]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: PyTree, meta: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
        """Save `state` and JSON `meta` as `step`; returns whether a save started (orbax skips an existing step).

        force: save even if orbax's save-interval policy would skip this step (the loop forces the final and the
            SIGTERM save).
        """
        step = int(step)
        try:
            plain_meta = json.loads(json.dumps(dict(meta or {}), default=_json_default, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint meta for step {step} in {self.directory} is not JSON-serializable: {e}") from e
        if step in self._manager.all_steps():
            return False
        data_state, key_impls = prng_keys.keys_to_data(state)
        record = {
            "meta": plain_meta,
            "fingerprint": self.fingerprint,
            "prng_keys": key_impls,
            "checksums": checksums.checksums(data_state),
        }
        args = ocp.args.Composite(state=ocp.args.StandardSave(data_state), meta=ocp.args.JsonSave(record))
        return bool(self._manager.save(step, args=args, force=force))

    def protect(self, steps: set[int]) -> None:
        """Keep exactly these steps beyond the latest `keep` (replaces the previous set; applied at the next
        save's clean-up)."""
        self._protected.clear()
        self._protected.update(int(s) for s in steps)

    def latest_step(self) -> int | None:
        """The newest committed step, or None in an empty directory (a fresh run)."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, step: int | None = None, *, abstract_state: PyTree = None) -> tuple[PyTree, dict[str, Any]]:
        """Load `(state, meta)` of `step` (default: the latest).

        abstract_state: the tree to restore into. Leaves are `jax.ShapeDtypeStruct`s (with `.sharding` set to put
            the arrays straight onto their shardings) or concrete arrays (their shape, dtype and sharding are used);
            typed-key leaves come back as typed keys. Pass the loop's freshly initialized state, or
            `jax.eval_shape` of its init with shardings attached. None restores the tree as orbax saw it:
            NamedTuples come back as dicts or lists and typed keys as raw uint32 key data (for inspection only).
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint to restore in {self.directory}")
        where = f"{self.directory} (step {step})"
        if step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint step {step} in {self.directory}; saved: {self.all_steps()}")
        for item in ("meta", "state"):
            if not (self.directory / str(step) / item).is_dir():
                raise CheckpointCorruptError(
                    f"checkpoint at {where}: its folder holds no {item!r} item (emptied, cut before it committed, "
                    "or not written by this checkpointer)"
                )
        try:
            record = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:
            if (reason := _damage(e)) is None:
                raise
            raise CheckpointCorruptError(f"checkpoint at {where}: its metadata cannot be read: {reason}") from e
        if not isinstance(record, dict) or "meta" not in record:
            raise CheckpointCorruptError(f"checkpoint at {where}: its metadata holds no run record (edited or cut)")
        if self.fingerprint is not None:
            check_fingerprint(record.get("fingerprint"), self.fingerprint, where, self.unchecked)
        key_impls = record.get("prng_keys", {})
        target = (
            None
            if abstract_state is None
            else prng_keys.abstract_for_restore(abstract_state, key_impls, where, CheckpointMismatchError)
        )
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as e:
            if (reason := _damage(e)) is not None:
                raise CheckpointCorruptError(f"checkpoint at {where}: its arrays cannot be read: {reason}") from e
            if isinstance(e, ValueError):
                raise CheckpointMismatchError(
                    f"checkpoint at {where} does not fit the requested state tree: {e}"
                ) from e
            raise
        if abstract_state is not None and "checksums" in record:  # checkpoints from before checksums load unchecked
            path = checksums.first_mismatch(record["checksums"], checksums.checksums(restored.state))
            if path is not None:
                raise CheckpointCorruptError(
                    f"checkpoint at {where}: array {path!r} does not match the checksum it was saved with "
                    "(its files changed after the save)"
                )
        state = restored.state if abstract_state is None else prng_keys.data_to_keys(restored.state, key_impls)
        return state, record["meta"]

    def restore_newest_readable(
        self, *, abstract_state: PyTree, report: Callable[[str], None] = print
    ) -> tuple[int, PyTree, dict[str, Any]] | None:
        """`(step, state, meta)` of the newest step that restores, or None in an empty directory.

        A step whose files are damaged is reported (which file, why), moved aside to `<directory>.corrupt/<step>`
        (never deleted) and the next older step is tried. A step of another model is not damage: that raises.
        If no step restores, nothing is moved and `CheckpointCorruptError` lists every step's reason."""
        failures: list[tuple[int, CheckpointCorruptError]] = []
        for step in reversed(self.all_steps()):
            try:
                state, meta = self.restore(step, abstract_state=abstract_state)
            except CheckpointCorruptError as e:
                failures.append((step, e))
                continue
            for bad, error in failures:
                moved = self.move_aside(bad)
                report(f"{error}\nmoved step {bad} aside to {moved}; resuming from step {step} instead")
            return step, state, meta
        if failures:
            reasons = "\n".join(f"  step {s}: {e}" for s, e in failures)
            raise CheckpointCorruptError(
                f"no checkpoint step in {self.directory} can be read:\n{reasons}\n"
                f"Move {self.directory} aside to start the run afresh."
            )
        return None

    def move_aside(self, step: int, why: str = "corrupt") -> Path:
        """Move step `step` out of the way, to `<directory>.<why>/<step>`, never deleting it."""
        target = self.directory.parent / f"{self.directory.name}.{why}" / str(step)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint step {step} to move aside ({why})")
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target = target.with_name(f"{step}.{len(list(target.parent.iterdir()))}")
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint step {step} moved aside")
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Block until pending async saves have committed (before exit, before reading files)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's threads."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass
class _Protected:
    """orbax preservation policy: keep the steps in a set the checkpointer updates."""

    steps: set[int]

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        return [info.step in self.steps for info in checkpoints]


# ------------------------------------------------------------------------------------------------------ JSON


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict") and callable(obj.to_dict):  # ml_collections.ConfigDict
        return _to_plain(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _canonical_json(obj: Any) -> str:
    """Deterministic JSON for hashing: sorted keys; dtypes, classes and functions by name (never a memory address)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.dtype):
            return str(o)
        if isinstance(o, type) or callable(o):
            return f"{getattr(o, '__module__', '')}.{getattr(o, '__qualname__', type(o).__qualname__)}"
        if isinstance(o, enum.Enum):
            return f"{type(o).__qualname__}.{o.name}"
        return _json_default(o)

    return json.dumps(obj, sort_keys=True, default=default, separators=(",", ":"))


def _json_default(obj: Any) -> Any:
    """numpy/jax scalars and arrays and paths become JSON; anything else is an error naming its type."""
    if isinstance(obj, np.generic | np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON-serializable ({obj!r:.80})")
