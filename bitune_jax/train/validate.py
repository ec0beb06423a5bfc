"""Check a whole run config before anything expensive happens (a typo must not wait for a 7B load).

`validate(config, device_count)` raises one `ConfigError` listing every bad key with its value and what is allowed;
it reads no weights and no data, so it takes milliseconds. The typed sections (`PeftConfig`, `BituneConfig`,
`SaturationConfig`) are built here too, so their own checks run up front as well.
"""

from __future__ import annotations

import math
import numbers
import pathlib
from typing import Any

from ml_collections import ConfigDict

from bitune_jax import kernels
from bitune_jax.bitune import BituneConfig
from bitune_jax.chat import check_template
from bitune_jax.models.compute import REMAT_POLICIES
from bitune_jax.peft import PeftConfig
from bitune_jax.tasks import registry as synthetic_tasks
from bitune_jax.train import run_record
from bitune_jax.train import spec as spec_lib
from bitune_jax.train.saturation import METRICS, MODES, SaturationConfig
from bitune_jax.train.spec import RunSpec

# Allowed values: the specs' `Literal` keys, plus the registries that live with their code.
CHOICES: dict[str, tuple[str, ...]] = {
    **spec_lib.choices(),
    "model.attn_impl": kernels.IMPLS,
    "model.remat": tuple(REMAT_POLICIES),
    "data.synthetic.task": tuple(synthetic_tasks.TASKS),
    "saturation.mode": MODES,
    "saturation.metric": METRICS,
}

# key: (minimum, maximum or None, integer?): the specs' declared ranges, plus the library sections'.
RANGES: dict[str, tuple[float, float | None, bool]] = {**spec_lib.ranges(), "peft.dropout": (0.0, 1.0, False)}


class ConfigError(ValueError):
    """A run config that cannot run; the message names every offending key."""


def _get(config: ConfigDict, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def _check_range(key: str, value: Any, lo: float, hi: float | None, integer: bool) -> str | None:
    if integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        return f"config.{key}={value!r}: must be an integer >= {lo}"
    if not integer and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)):
        return f"config.{key}={value!r}: must be a finite number"
    if value < lo or (hi is not None and value > hi):
        return f"config.{key}={value!r}: must be in [{lo}, {hi if hi is not None else 'inf'}]"
    return None


def validate(config: ConfigDict, device_count: int) -> RunSpec:
    """The run's typed spec; or `ConfigError` naming every key whose value cannot run on `device_count` devices."""
    errors: list[str] = []
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            errors.append(f"config.{key}={value!r}: choose one of {', '.join(map(repr, allowed))}")
    for key, (lo, hi, integer) in RANGES.items():
        problem = _check_range(key, _get(config, key), lo, hi, integer)
        if problem:
            errors.append(problem)
    if not errors:  # the open ends of ranges
        for key, value, problem in (
            ("train.lr", config.train.lr == 0, "a zero learning rate trains nothing"),
            ("train.b1", config.train.b1 == 1, "AdamW's beta1 must be below 1 (1 never updates the first moment)"),
            ("train.b2", config.train.b2 == 1, "AdamW's beta2 must be below 1 (1 never updates the second moment)"),
            ("train.eps", config.train.eps == 0, "AdamW's epsilon must be above 0 (a zero gradient divides 0 by 0)"),
            ("eval.top_p", config.eval.top_p == 0, "a nucleus of probability 0 holds no token; 1 keeps them all"),
        ):
            if value:
                errors.append(f"config.{key}={_get(config, key)!r}: {problem}")
    if not errors and config.train.rollback_lr_factor == 0:
        errors.append(
            "config.train.rollback_lr_factor=0: a rollback would train on at a zero learning rate; "
            "use 1 to keep the rate"
        )

    if not str(config.workdir).strip():
        errors.append("config.workdir is empty: name the folder for checkpoints, logs and run.json")
    if not config.model.name:
        errors.append(
            "config.model.name is empty: set a preset with shipped weights, a local Hugging Face "
            "directory or a .gguf file"
        )
    if config.log.wandb.mode in ("offline", "online") and not config.log.wandb.project:
        errors.append(
            f"config.log.wandb.project is empty but config.log.wandb.mode={config.log.wandb.mode!r}: "
            "name the W&B project, or set mode to 'disabled'"
        )
    if config.data.source == "jsonl":
        errors += _missing_file(
            "data.train_path", config.data.train_path, "a JSONL file of chat `messages` or `{prompt, response}` rows"
        )
    if config.data.source == "hf":
        errors += _missing_file(
            "data.hf.path", config.data.hf.path, "a datasets save_to_disk directory, a .parquet file or a shard folder"
        )
        if config.data.hf.where_value and not config.data.hf.where_column:
            errors.append(f"config.data.hf.where_value={config.data.hf.where_value!r} needs data.hf.where_column")
    if config.data.order == "authors" and config.data.bucket_chunks:
        errors.append(
            f"config.data.bucket_chunks={config.data.bucket_chunks}: data.order='authors' is the authors' exact "
            "example order, which length bucketing would change; set bucket_chunks=0"
        )
    if config.data.chat_template:
        missing = _missing_file("data.chat_template", config.data.chat_template, "a .jinja chat template")
        errors += missing
        if not missing:
            try:
                check_template(pathlib.Path(config.data.chat_template).read_text(), config.data.chat_template)
            except (ValueError, UnicodeDecodeError) as e:
                errors.append(f"config.data.chat_template: {e}")
    if config.eval.mmlu.test:
        errors += _missing_file("eval.mmlu.test", config.eval.mmlu.test, "a JSONL of MMLU test rows")
        errors += _missing_file("eval.mmlu.dev", config.eval.mmlu.dev, "a JSONL of MMLU dev rows (the few shots)")
        if config.objective == "bitune":
            errors.append(
                "config.eval.mmlu: the MMLU forgetting eval scores a plain forward's next-letter logits; "
                "objective=bitune has no such forward (use eval.every_epochs or the multiple-choice eval)"
            )
    if config.eval.every_epochs and config.eval.source == "jsonl":
        errors += _missing_file("eval.path", config.eval.path, "a held-out JSONL in the training format")

    m = config.mesh
    sizes = {k: m[k] for k in ("data", "fsdp", "sequence", "tensor")}
    if all(isinstance(v, int) and v >= 1 for v in sizes.values()):
        product = math.prod(sizes.values())
        if product != device_count:
            errors.append(
                f"config.mesh: data={m.data} x fsdp={m.fsdp} x sequence={m.sequence} x tensor={m.tensor} "
                f"= {product} devices, but {device_count} are available; make the product match"
            )
        if isinstance(config.data.pad_multiple, int) and config.data.pad_multiple % m.sequence:
            errors.append(
                f"config.data.pad_multiple={config.data.pad_multiple} must be a multiple of "
                f"config.mesh.sequence={m.sequence} (each device holds an equal slice of the tokens)"
            )
        if isinstance(config.data.max_len, int) and config.data.max_len % m.sequence:
            errors.append(
                f"config.data.max_len={config.data.max_len} must be a multiple of "
                f"config.mesh.sequence={m.sequence} (the longest batch is max_len tokens wide)"
            )

    keys = set(run_record.flat_config(config))
    for key in (k.strip() for k in str(config.resume.allow_changes).split(",") if k.strip()):
        if key != "*" and key not in keys and not any(k.startswith(key.rstrip(".") + ".") for k in keys):
            errors.append(f"config.resume.allow_changes names {key!r}, which is neither a config key nor a section")

    for name, build in (
        ("peft", lambda: PeftConfig(**config.peft.to_dict())),
        ("bitune", lambda: BituneConfig(peft=PeftConfig(**config.peft.to_dict()), **config.bitune.to_dict())),
        ("saturation", lambda: SaturationConfig.from_mapping(config.saturation)),
    ):
        if name != "saturation" and any(e.startswith(f"config.{name}.") for e in errors):
            continue  # already reported
        try:
            build()
        except (TypeError, ValueError, KeyError) as e:
            errors.append(f"config.{name}: {e}")
    if errors:
        raise ConfigError("invalid run config:\n  " + "\n  ".join(errors))
    return RunSpec.from_config(config)


def _missing_file(key: str, path: str, what: str) -> list[str]:
    if not path:
        return [f"config.{key} is empty: set it to {what}"]
    if not pathlib.Path(path).exists():
        return [f"config.{key}={path!r}: no such file"]
    return []
