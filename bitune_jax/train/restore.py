"""Restore a trained run: a workdir's checkpoint on its base model, as the `eval.model.TrainedModel` every eval takes.

A full fine-tune's checkpoint holds the model's weights, a PEFT run's its adapters and a Bitune run's its two adapter
sets and mixing weights; `restore_run` puts them beside (or in place of) the base, `model_from_state` does the same
for the weights a trainer holds in memory, so an eval during training and one after it run the same code. Nothing
here needs lm-eval or the training loop.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bitune_jax.api import LM, load
from bitune_jax.eval.model import TrainedModel
from bitune_jax.models.transformer import Params
from bitune_jax.train.checkpointing import Checkpointer, committed_steps
from bitune_jax.train.objectives import Objective
from bitune_jax.train.spec import RunSpec


def model_from_state(objective: Objective, trainable: Params, frozen: Params, lm: LM) -> TrainedModel:
    """The weights a run holds (`objective.split`'s trees) as a `TrainedModel`; `lm` gives the tokenizer, ids and
    compute setting, its params are not read."""
    if objective.kind == "full":
        return TrainedModel(dataclasses.replace(lm, params=trainable))
    return TrainedModel(
        dataclasses.replace(lm, params=frozen), objective.kind, trainable, objective.peft, objective.bitune
    )


def restore_run(
    workdir: str | pathlib.Path,
    step: int | None = None,
    *,
    model: str | None = None,
    dtype: str | None = None,
    attn_impl: str | None = None,
) -> TrainedModel:
    """The newest checkpoint of a bitune_jax run (or the one `step` names) on its base model.

    The objective and adapter settings come from the checkpoint's own config (what trained these weights). `model`
    names the base instead of the run's `model.name` (the same weights moved); `dtype` and `attn_impl` default to
    the run's, as its trainer evaluated it. Trained weights keep the dtype they were saved in.
    """
    spec, trainable, step = _read_checkpoint(pathlib.Path(workdir), step)
    lm = load(model or spec.model.name, dtype=dtype or spec.model.dtype, attn_impl=attn_impl or spec.model.attn_impl)
    objective = Objective.from_spec(spec, lm.cfg, lm.compute)
    _check_fits(objective, lm.params, trainable, f"{workdir} (step {step})")
    trained = model_from_state(objective, jax.tree.map(jnp.asarray, trainable), lm.params, lm)
    return dataclasses.replace(trained, step=step)


def load_model(
    pretrained: str | None = None,
    run: str | pathlib.Path | None = None,
    step: int | None = None,
    *,
    dtype: str | None = None,
    attn_impl: str | None = None,
) -> TrainedModel:
    """What a command line names: a run's checkpoint (`restore_run`, on `pretrained` if given) or a pretrained
    model alone (a preset, a Hugging Face directory or a `.gguf` file)."""
    if run:
        return restore_run(run, step, model=pretrained, dtype=dtype, attn_impl=attn_impl)
    if not pretrained:
        raise ValueError("name a pretrained model (a preset, a Hugging Face directory or a .gguf file) or a run")
    return TrainedModel(load(pretrained, dtype=dtype or "float32", attn_impl=attn_impl or "xla"))


def _read_checkpoint(workdir: pathlib.Path, step: int | None) -> tuple[RunSpec, Any, int]:
    """`(the run's spec, the trainable tree, its step)` from `workdir/checkpoints`."""
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{workdir}: not a bitune_jax run directory (no checkpoints/ in it)")
    saved = committed_steps(directory)  # read before orbax opens (and would create) anything
    if not saved:
        raise FileNotFoundError(f"{directory}: no checkpoint saved yet")
    if step is not None and step not in saved:
        raise FileNotFoundError(f"{directory}: no checkpoint at step {step} (saved: {saved})")
    step = saved[-1] if step is None else step
    with Checkpointer(directory, async_save=False) as ckpt:
        state, meta = ckpt.restore(step)
    if "config" not in meta:
        raise ValueError(f"{directory} (step {step}): the checkpoint holds no run config")
    trainable = state["trainable"] if isinstance(state, dict) else state[1]  # TrainState as orbax stored it
    return RunSpec.from_config(meta["config"]), trainable, step


def _check_fits(objective: Objective, base: Params, trainable: Any, where: str) -> None:
    """The checkpoint's tree has the shapes `objective` trains on `base` (another model's weights fail here)."""
    expected = jax.eval_shape(lambda p: objective.split(p, jax.random.key(0))[0], base)
    got, want = jax.tree.map(np.shape, trainable), jax.tree.map(np.shape, expected)
    if jax.tree.structure(got) != jax.tree.structure(want) or jax.tree.leaves(got) != jax.tree.leaves(want):
        raise ValueError(f"{where}: the checkpoint's {objective.kind} weights do not fit this model")
