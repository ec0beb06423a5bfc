"""The run config as typed, frozen specs: what `train/` takes instead of the raw `ConfigDict`.

`experiments/configs/common.py:base()` is the one list of keys and defaults; `RunSpec.from_config` turns a locked
`ConfigDict` (after `validate`) into these dataclasses once, at the top of a run, so a function's signature says
what it reads and nothing can change a value mid-run. The PEFT and saturation sections become the library's own
`PeftConfig` and `SaturationConfig`. A test holds the specs and `base()` to the same keys.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from bitune_jax.peft import PeftConfig
from bitune_jax.train.saturation import SaturationConfig


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    dtype: str
    param_dtype: str
    attn_impl: str
    remat: str


@dataclasses.dataclass(frozen=True)
class BituneSpec:
    tau: float
    w_init: float | None
    mixing: str
    learn_alpha: bool
    bidirectional: bool
    shared_adapters: bool


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    task: str  # a name in data.synthetic_tasks.TASKS
    pool_size: int
    test_size: int
    min_steps: int
    max_steps: int
    seed: int
    cot: bool


@dataclasses.dataclass(frozen=True)
class HFDataSpec:
    path: str  # a save_to_disk directory, a .parquet file or a folder of .parquet shards
    split: str
    messages: str
    prompt: str
    response: str
    where_column: str  # "": no filter; else keep rows whose str(value) == where_value
    where_value: str


@dataclasses.dataclass(frozen=True)
class DataSpec:
    source: str
    train_path: str
    chat_template: str
    template: str
    num_samples: int
    val_size: int
    pool_seed: int
    pool_order: str  # shuffle | file
    order: str  # grain | authors
    max_len: int
    truncation: str
    batch_size: int
    pad_multiple: int
    bucket_chunks: int
    synthetic: SyntheticSpec
    hf: HFDataSpec


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    epochs: int
    max_updates: int
    lr: float
    schedule: str
    warmup_frac: float
    weight_decay: float
    b1: float
    b2: float
    eps: float
    clip: float
    accumulate: int
    loss_chunk: int
    on_nonfinite: str
    rollback_lr_factor: float
    rollback_limit: int
    moments_dtype: str


@dataclasses.dataclass(frozen=True)
class MMLUSpec:
    test: str
    dev: str
    shots: int
    num_items: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    every_epochs: int
    at_start: bool
    source: str
    path: str
    num_items: int
    n: int
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int
    batch_size: int
    val_every_epochs: int
    mmlu: MMLUSpec


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    data: int
    fsdp: int
    sequence: int
    tensor: int


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
    every_steps: int
    keep: int
    async_save: bool
    spike_factor: float


@dataclasses.dataclass(frozen=True)
class WandbSpec:
    project: str
    entity: str
    mode: str  # disabled, offline (a local run under workdir/wandb, `wandb sync` uploads it) or online


@dataclasses.dataclass(frozen=True)
class LogSpec:
    every_steps: int
    tensorboard: bool
    wandb: WandbSpec


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    enabled: bool
    coordinator: str
    num_processes: int
    process_id: int


@dataclasses.dataclass(frozen=True)
class ResumeSpec:
    allow_changes: str


@dataclasses.dataclass(frozen=True)
class RunSpec:
    workdir: str
    seed: int
    objective: str
    model: ModelSpec
    peft: PeftConfig
    bitune: BituneSpec
    data: DataSpec
    train: TrainSpec
    saturation: SaturationConfig
    eval: EvalSpec
    mesh: MeshSpec
    checkpoint: CheckpointSpec
    log: LogSpec
    distributed: DistributedSpec
    resume: ResumeSpec

    @classmethod
    def from_config(cls, config: Any) -> RunSpec:
        """From a `ConfigDict` (or a nested mapping) holding exactly `base()`'s keys."""
        return _build(cls, config.to_dict() if hasattr(config, "to_dict") else dict(config), "config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: Mapping[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(values) - set(fields)), sorted(set(fields) - set(values))
    if unknown or missing:
        raise KeyError(
            f"{where}: keys {unknown} are not in the run config and {missing} are missing; "
            "configs start from experiments/configs/common.py:base()"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for name in fields:
        kind = hints[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out[name] = _build(kind, dict(values[name]), f"{where}.{name}")
        else:
            out[name] = values[name]
    return cls(**out)
