"""The run config: typed, frozen specs that carry every key's default, allowed values and meaning.

This is the one source of the config. `base()` builds the locked `ml_collections.ConfigDict` that config files
start from (`experiments/configs/*.py` change values, never add keys); `train.validate` checks a config against
the choices (`Literal` types) and ranges (`key(..., lo=, hi=)`) declared here, plus the checks across keys; and
`RunSpec.from_config` turns the checked `ConfigDict` into these dataclasses once, at the top of a run, so a
function's signature says what it reads and nothing can change a value mid-run. The PEFT and saturation sections
are the library's own `PeftConfig` and `SaturationConfig`, with their defaults.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from ml_collections import ConfigDict

from bitune_jax.peft import PeftConfig
from bitune_jax.train.saturation import SaturationConfig


def key(default: Any, doc: str = "", *, lo: float | None = None, hi: float | None = None) -> Any:
    """A config key: its default, one line on what it does, and for numbers the allowed range `[lo, hi]`."""
    return dataclasses.field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi})


def section(cls: type) -> Any:
    return dataclasses.field(default_factory=cls)


Dtype = Literal["float32", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str = key("smollm2-135m-instruct", "a preset with shipped weights, a local HF directory or a .gguf file")
    dtype: Dtype = key("float32", "compute dtype")
    param_dtype: Dtype = key("float32", "trainable (master) weights; bfloat16 updates bf16 parameters directly")
    attn_impl: str = key("xla", "xla | blockwise | pallas | auto (bitune_jax.kernels.IMPLS)")
    remat: str = key("none", "activation rematerialization: none | dots | full")


@dataclasses.dataclass(frozen=True)
class BituneSpec:
    tau: float = key(0.01, "alpha = |w| / (tau + |w|): a small tau lets alpha move fast")
    w_init: float | None = key(0.01, "initial mixing weight (tau: alpha starts at 0.5)")
    mixing: Literal["per_layer", "per_kv_head"] = key("per_layer", "one mixing scalar per layer (the paper's)")
    learn_alpha: bool = key(True, "train the mixing weights")
    bidirectional: bool = key(True, "the second prompt pass reads the prompt bidirectionally")
    shared_adapters: bool = key(False, "both prompt passes share one adapter set (an ablation)")


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    task: str = key("arithmetic", "a name in the synthetic task registry")
    pool_size: int = key(512, "training pool rows", lo=1)
    test_size: int = key(64, "held-out rows, disjoint from the pool", lo=0)
    min_steps: int = key(4, "reasoning steps per problem, at least", lo=1)
    max_steps: int = key(8, "reasoning steps per problem, at most", lo=1)
    seed: int = key(0, "generation seed", lo=0)
    cot: bool = key(True, "answers carry a <think> trace before the \\boxed{} answer")


@dataclasses.dataclass(frozen=True)
class HFDataSpec:
    path: str = key("", "a save_to_disk directory, a .parquet file or a folder of .parquet shards")
    split: str = key("train", "the split of a DatasetDict")
    messages: str = key("messages", "the chat column (wins when present; '' reads the pair columns)")
    prompt: str = key("prompt", "the prompt column of the pair format")
    response: str = key("response", "the response column of the pair format")
    where_column: str = key("", "keep only rows whose str(value) in this column ...")
    where_value: str = key("", "... equals this ('' : no filter)")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """`pool_order="file"`: validation is the first `val_size` rows and the training set the next `num_samples`,
    as `experiments/prepare_dolci.py` writes the authors' split. `order="authors"`: epoch e reorders the previous
    epoch's order by `numpy.random.default_rng(seed + e).permutation`, as their `dataset.shuffle(seed=seed + e)`."""

    source: Literal["synthetic", "jsonl", "hf"] = key("synthetic", "the project's long-CoT task | train_path | data.hf")
    train_path: str = key("", "JSONL (or .jsonl.gz) of chat `messages` or `{prompt, response}` rows")
    chat_template: str = key("", "a .jinja file replacing the tokenizer's template (e.g. an instruct one for a base)")
    template: Literal["chat", "plain"] = key("chat", "the model's chat template | 'Question: ...\\n\\nAnswer:'")
    num_samples: int = key(0, "nested-prefix subset of the pool (0: all)", lo=0)
    val_size: int = key(0, "rows held out of the pool first, the same for every num_samples", lo=0)
    pool_seed: int = key(42, "the one shuffle of the pool (pool_order=shuffle)", lo=0)
    pool_order: Literal["shuffle", "file"] = key("shuffle", "shuffle the pool once | rows as they stand (a split)")
    order: Literal["grain", "authors"] = key("grain", "each epoch: a fresh shuffle | the authors' chain")
    max_len: int = key(512, "prompt + answer tokens at most", lo=2)
    truncation: Literal["drop", "truncate", "error"] = key("drop", "what a longer example gets")
    control_tokens: Literal["keep", "escape", "refuse"] = key(
        "keep", "a special token's text inside a row: encoded as the token | as plain text (both counted) | an error"
    )
    batch_size: int = key(1, "examples per step (global, over all processes)", lo=1)
    pad_multiple: int = key(16, "batches pad to a multiple of this (bounds recompilation)", lo=1)
    bucket_chunks: int = key(0, ">0: length bucketing within chunks of this many batches", lo=0)
    packing: Literal["none", "first_fit", "best_fit"] = key(
        "none", "one example a row | each batch's examples end to end in rows of max_len (same examples, same loss)"
    )
    synthetic: SyntheticSpec = section(SyntheticSpec)
    hf: HFDataSpec = section(HFDataSpec)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """`on_nonfinite`: a step whose loss or gradient norm is NaN/inf is never applied; then "stop" ends the run
    (naming the batch and the last known good checkpoint), "skip_batch" goes on without it (counted per epoch), or
    "rollback" restores the last known good checkpoint (`checkpoint.spike_factor`), skips that batch in the replay
    and scales the learning rate by `rollback_lr_factor`, at most `rollback_limit` times."""

    epochs: int = key(1, "epochs over the training set", lo=1)
    max_updates: int = key(0, "the update budget (0: epochs x batches); the schedule spans the budget", lo=0)
    lr: float = key(2e-5, "peak learning rate", lo=0.0)
    schedule: Literal["cosine", "linear", "constant"] = key("cosine", "after the linear warmup")
    warmup_frac: float = key(0.1, "warmup updates: floor(warmup_frac x budget)", lo=0.0, hi=1.0)
    weight_decay: float = key(0.0, "AdamW weight decay", lo=0.0)
    b1: float = key(0.9, "AdamW beta1, below 1", lo=0.0, hi=1.0)
    b2: float = key(0.999, "AdamW beta2, below 1", lo=0.0, hi=1.0)
    eps: float = key(1e-8, "AdamW epsilon, above 0", lo=0.0)
    clip: float = key(1.0, "gradient global-norm clip (0: off)", lo=0.0)
    accumulate: int = key(1, "steps per optimizer update", lo=1)
    loss_chunk: int = key(0, ">0: score answer rows this many at a time (logits never exist whole)", lo=0)
    loss_norm: Literal["per_example", "per_token"] = key(
        "per_example", "each example's answer-token mean, averaged (both papers) | the mean over a step's tokens"
    )
    on_nonfinite: Literal["stop", "skip_batch", "rollback"] = key("stop", "what a NaN/inf step does to the run")
    rollback_lr_factor: float = key(0.5, "rollback: the learning rate is scaled by this", lo=0.0, hi=1.0)
    rollback_limit: int = key(3, "rollbacks at most", lo=1)
    moments_dtype: Dtype = key("float32", "AdamW's moments and update math")


@dataclasses.dataclass(frozen=True)
class MMLUSpec:
    test: str = key("", "JSONL of MMLU test rows (cais/mmlu layout); set: the forgetting eval runs")
    dev: str = key("", "JSONL of MMLU dev rows (the few shots)")
    shots: int = key(5, "few-shot examples", lo=0)
    num_items: int = key(0, "the first N questions (0: all)", lo=0)
    batch_size: int = key(8, "rows per scoring batch", lo=1)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Held-out accuracy during training (`bitune_jax.train.evaluation`), logged per epoch beside token accuracy.
    `mmlu`: the repetition paper's forgetting eval on local JSONL in cais/mmlu's layout; with `test` set it runs
    after the last epoch, and at the held-out eval's epochs (`every_epochs`, `at_start`)."""

    every_epochs: int = key(0, "held-out generation eval after every k-th epoch and the last (0: off)", lo=0)
    at_start: bool = key(False, "also before the first update (logged as epoch 0)")
    source: Literal["synthetic", "jsonl"] = key("synthetic", "the task's disjoint test set | path")
    path: str = key("", "held-out JSONL in the training format")
    num_items: int = key(32, "the first N held-out items (0: all)", lo=0)
    n: int = key(1, "samples per item", lo=1)
    temperature: float = key(0.0, "sampling temperature (0: greedy)", lo=0.0)
    top_p: float = key(1.0, "nucleus: the fewest tokens holding this much probability", lo=0.0, hi=1.0)
    seed: int = key(0, "sampling seed", lo=0)
    max_new_tokens: int = key(256, "generation budget", lo=1)
    batch_size: int = key(16, "decode slots: samples the engine decodes at once", lo=1)
    val_every_epochs: int = key(1, "validation loss and accuracy (data.val_size > 0) every k-th epoch", lo=1)
    mmlu: MMLUSpec = section(MMLUSpec)


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """data x fsdp split rows, sequence splits each row's tokens (long sequences, batches smaller than the mesh),
    tensor splits heads and MLP columns; parameters are sharded over fsdp x sequence. The product is the device
    count."""

    data: int = key(1, "rows", lo=1)
    fsdp: int = key(1, "rows, and parameters sharded ZeRO-3 style", lo=1)
    sequence: int = key(1, "each row's tokens (long sequences); parameters sharded too", lo=1)
    tensor: int = key(1, "heads and MLP columns", lo=1)


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
    every_steps: int = key(100, "save every k steps (0: only at the end)", lo=0)
    keep: int = key(2, "newest checkpoints kept (the last known good one besides)", lo=1)
    async_save: bool = key(True, "save in the background")
    spike_factor: float = key(3.0, "a save is known good when its window's loss and gradient stay within", lo=1.0)


@dataclasses.dataclass(frozen=True)
class WandbSpec:
    """Weights & Biases beside TensorBoard; mode offline writes a local run under workdir/wandb (`wandb sync`
    uploads it later), online needs a login."""

    project: str = key("", "W&B project (required unless mode is disabled)")
    entity: str = key("", "W&B entity")
    mode: Literal["disabled", "offline", "online"] = key("disabled", "offline: a local run `wandb sync` uploads")


@dataclasses.dataclass(frozen=True)
class LogSpec:
    every_steps: int = key(1, "log a step row every k steps", lo=1)
    tensorboard: bool = key(True, "TensorBoard events beside metrics.jsonl")
    wandb: WandbSpec = section(WandbSpec)


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    enabled: bool = key(False, "jax.distributed.initialize before anything else")
    coordinator: str = key("", "host:port ('': cluster auto-detection)")
    num_processes: int = key(1, "with a coordinator")
    process_id: int = key(0, "with a coordinator")


@dataclasses.dataclass(frozen=True)
class ResumeSpec:
    """A resume must match the run it continues (`bitune_jax.train.run_record`); name the keys it may change,
    comma-separated ("train.lr,data.batch_size"), and the change is recorded in workdir/run.json."""

    allow_changes: str = key("", "comma-separated keys a resume may change ('*': any; recorded in run.json)")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    workdir: str = key("runs/default", "checkpoints, logs, run.json, summary.json")
    seed: int = key(0, "parameters, dropout and each epoch's data order", lo=0)
    objective: Literal["full", "peft", "bitune"] = key("full", "what is trained")
    model: ModelSpec = section(ModelSpec)
    peft: PeftConfig = section(PeftConfig)
    bitune: BituneSpec = section(BituneSpec)
    data: DataSpec = section(DataSpec)
    train: TrainSpec = section(TrainSpec)
    saturation: SaturationConfig = section(SaturationConfig)
    eval: EvalSpec = section(EvalSpec)
    mesh: MeshSpec = section(MeshSpec)
    checkpoint: CheckpointSpec = section(CheckpointSpec)
    log: LogSpec = section(LogSpec)
    distributed: DistributedSpec = section(DistributedSpec)
    resume: ResumeSpec = section(ResumeSpec)

    @classmethod
    def from_config(cls, config: Any) -> RunSpec:
        """From a `ConfigDict` (or a nested mapping) holding exactly `base()`'s keys."""
        return _build(cls, config.to_dict() if hasattr(config, "to_dict") else dict(config), "config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def base() -> ConfigDict:
    """Every key a run config has, with its default, locked: a config file can change values but not add keys
    (`c.train.lrr = 1e-4` is an error, in a file as on the command line)."""
    c = ConfigDict(RunSpec().to_dict())
    c.lock()
    return c


class Key(NamedTuple):
    """One leaf key of the config: its resolved type, default, meaning and range."""

    type: Any
    default: Any
    doc: str
    lo: float | None
    hi: float | None


def keys(cls: type = RunSpec, prefix: str = "") -> dict[str, Key]:
    """Flat `{"train.lr": Key, ...}` of every leaf key (the library sections' keys have no doc or range here)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Key] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out.update(keys(kind, f"{prefix}{f.name}."))
        else:
            m = f.metadata
            out[f"{prefix}{f.name}"] = Key(kind, f.default, m.get("doc", ""), m.get("lo"), m.get("hi"))
    return out


def choices() -> dict[str, tuple[Any, ...]]:
    """`{key: allowed values}` of every key typed as a `Literal`."""
    return {k: typing.get_args(v.type) for k, v in keys().items() if typing.get_origin(v.type) is Literal}


def ranges() -> dict[str, tuple[float, float | None, bool]]:
    """`{key: (lo, hi or None, integer?)}` of every key declared with a range."""
    return {k: (v.lo, v.hi, v.type is int) for k, v in keys().items() if v.lo is not None}


def _build(cls: type, values: Mapping[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown or missing:
        raise KeyError(
            f"{where}: keys {unknown} are not in the run config and {missing} are missing; "
            "configs start from bitune_jax.train.spec.base() (experiments/configs/common.py)"
        )
    hints = typing.get_type_hints(cls)
    out = {}
    for name in names:
        kind = hints[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            out[name] = _build(kind, dict(values[name]), f"{where}.{name}")
        else:
            out[name] = values[name]
    return cls(**out)
