"""Logs for people: a metrics JSONL, TensorBoard (and optionally W&B) scalars, an end-of-run PNG and a progress bar.

Only process 0 writes (`enabled`), so a multi-host run has one set of logs. The JSONL is the record of truth
(one JSON object a line, floats only, strict JSON: a non-finite value is written as null); TensorBoard and the PNG
are views of the same numbers. A resumed run passes `resume_step` so rows and events after the restored checkpoint,
which the resumed run will produce again, are dropped rather than duplicated. W&B cannot delete what it holds, so
it keeps its own row counter and plots against the training `step` as a value: a resume or a rollback replays steps
as new rows (both trajectories stay visible, a rollback marked by `rollback_to_step`) rather than being dropped as
non-monotonic.
"""

from __future__ import annotations

import json
import math
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import jax
import numpy as np

if TYPE_CHECKING:
    from bitune_jax.train.spec import WandbSpec

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PLOT_NAME = "token_accuracy_loss.png"
ROLLED_BACK_NAME = "metrics.rolled_back.jsonl"  # rows a divergence rollback replaced (`RunLogger.rewind`)
WANDB_ID_NAME = "wandb_run_id"  # the W&B run id, kept so a resumed run continues the same W&B run
WANDB_MODES = ("disabled", "offline", "online")


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Scalar values as floats (None when non-finite); non-scalar values (per-example arrays) are skipped."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        arr = np.asarray(value)
        if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            continue
        v = float(arr.reshape(()))
        out[str(name)] = v if math.isfinite(v) else None
    return out


def _present(value: Any) -> bool:
    """Whether a summary value goes to W&B: not None and not a non-finite float (strict JSON, as the JSONL)."""
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def _wandb_field(spec: WandbSpec | Mapping[str, Any], name: str) -> str:
    return str((spec.get(name, "") if isinstance(spec, Mapping) else getattr(spec, name, "")) or "")


def _tag(name: str) -> str:
    """A step metric's tag, the same in TensorBoard and W&B: `train/<name>` unless the name has its own `/`."""
    return name if "/" in name else f"train/{name}"


class RunLogger:
    """Writes `workdir/metrics.jsonl`, `workdir/tensorboard/` and, at `close()`, `workdir/token_accuracy_loss.png`.

    enabled: whether this process writes; default `jax.process_index() == 0`. A disabled logger touches no file.
    tensorboard: also write TensorBoard scalars (tensorboardX).
    resume_step: the step a resumed run restarts after; JSONL rows with a larger step are dropped and TensorBoard
        purges its events from `resume_step + 1`. Epoch rows still in the JSONL seed the plot's history.
    closed_epochs: with `resume_step`, the epochs the restored checkpoint had closed; the rows of later epochs
        are dropped too, since the resumed run logs them again (an epoch that ended at the restored step itself,
        a finished run run again). -1 drops every epoch row, `at_start`'s epoch 0 included (a fresh start).
    wandb: a `WandbSpec` (or mapping) with project, entity and mode; mode "offline" or "online" also logs the
        scalars to W&B (`import wandb` only then) under the run id in `workdir/wandb_run_id`, with `config` as
        the run's config.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        enabled: bool | None = None,
        tensorboard: bool = True,
        resume_step: int | None = None,
        closed_epochs: int | None = None,
        wandb: WandbSpec | Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.jsonl_path = self.workdir / JSONL_NAME
        self.plot_path = self.workdir / PLOT_NAME
        self.epochs: dict[int, dict[str, float | None]] = {}  # epoch -> epoch metrics, for the plot
        self.tensorboard = tensorboard
        self._file: TextIO | None = None
        self._tb = None
        self._wandb = None  # the W&B run, when on
        self._open(resume_step, closed_epochs)
        if wandb is not None and self.enabled and _wandb_field(wandb, "mode") != "disabled":
            self._wandb = self._init_wandb(wandb, config)

    def _init_wandb(self, spec: WandbSpec | Mapping[str, Any], config: Mapping[str, Any] | None):
        """Start (or, with the id kept in the workdir, resume) the W&B run; its x axes are `step` and `epoch`."""
        mode = _wandb_field(spec, "mode")
        if mode not in WANDB_MODES:
            raise ValueError(f"config.log.wandb.mode={mode!r}: choose one of {', '.join(map(repr, WANDB_MODES))}")
        import wandb

        id_path = self.workdir / WANDB_ID_NAME
        if not id_path.exists():
            id_path.write_text(secrets.token_hex(8) + "\n", encoding="utf-8")
        run = wandb.init(
            project=_wandb_field(spec, "project") or None,
            entity=_wandb_field(spec, "entity") or None,
            mode=mode,
            dir=str(self.workdir),
            config=dict(config) if config is not None else None,
            resume="allow",
            id=id_path.read_text(encoding="utf-8").strip(),
        )
        run.define_metric("step")
        run.define_metric("epoch")
        for pattern, axis in (("train/*", "step"), ("epoch/*", "epoch"), ("rollback_to_step", "step")):
            run.define_metric(pattern, step_metric=axis)
        return run

    def _wandb_log(self, values: Mapping[str, float | int | None]) -> None:
        """One W&B row; None (non-finite) values are left out, as TensorBoard leaves them out."""
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in values.items() if v is not None})

    def _open(self, resume_step: int | None, closed_epochs: int | None, set_aside: Path | None = None) -> None:
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.jsonl_path.exists():
            self._reload(resume_step, closed_epochs, set_aside)
        self._file = self.jsonl_path.open("a", encoding="utf-8")
        if self.tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else int(resume_step) + 1
            self._tb = SummaryWriter(logdir=str(self.workdir / TENSORBOARD_DIR), purge_step=purge, flush_secs=30)

    def rewind(self, step: int, closed_epochs: int | None = None) -> Path:
        """Continue from `step` again (a divergence rollback replays what follows): rows after it (and rows of
        epochs after `closed_epochs`) move to `metrics.rolled_back.jsonl` (appended, never lost) and TensorBoard
        purges its later events. Returns that file's path."""
        self._close_files()
        self.epochs = {}
        set_aside = self.workdir / ROLLED_BACK_NAME
        self._open(step, closed_epochs, set_aside)
        self._wandb_log({"rollback_to_step": int(step), "step": int(step)})
        return set_aside

    def _reload(self, resume_step: int | None, closed_epochs: int | None, set_aside: Path | None = None) -> None:
        """Keep rows up to `resume_step` and epoch rows up to `closed_epochs` (all rows when None; the others
        appended to `set_aside` if given) and rebuild the per-epoch history from them."""
        kept, dropped = [], []
        for n, line in enumerate(self.jsonl_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:  # a line cut by a kill mid-write: drop it, keep the rest
                print(f"[RunLogger] dropping unreadable line {n} of {self.jsonl_path}: {e}", file=sys.stderr)
                continue
            if (resume_step is not None and row.get("step", 0) > resume_step) or (
                closed_epochs is not None and row.get("scope") == "epoch" and int(row["epoch"]) > closed_epochs
            ):
                dropped.append(row)
                continue
            kept.append(row)
            if row.get("scope") == "epoch":
                self.epochs[int(row["epoch"])] = {k[6:]: v for k, v in row.items() if k.startswith("epoch/")}
        if set_aside is not None and dropped:
            with set_aside.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r) + "\n" for r in dropped))
        if resume_step is not None or closed_epochs is not None:
            self.jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def _write(self, row: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def log(
        self,
        step: int,
        metrics: Mapping[str, Any],
        *,
        epoch: float | None = None,
        example_rows: Sequence[int] | None = None,
    ) -> None:
        """One row of per-step metrics (loss, token_accuracy, learning_rate, grad_norm, tokens_per_s, mfu ...).

        TensorBoard and W&B tags are the names, under `train/` when the name has no `/` of its own.
        `example_rows` (the JSONL only): the training-set rows of every example trained on since the previous
        row, in order, so two runs can be lined up example by example.
        """
        if not self.enabled:
            return
        values = _scalars(metrics)
        row: dict[str, Any] = {"scope": "step", "step": int(step)}
        if epoch is not None:
            row["epoch"] = float(epoch)
        if example_rows is not None:
            row["example_rows"] = [int(r) for r in example_rows]
        self._write({**row, **values})
        if self._tb is not None:
            for name, v in values.items():
                if v is not None:
                    self._tb.add_scalar(_tag(name), v, int(step))
        self._wandb_log({**{_tag(k): v for k, v in values.items()}, "step": int(step)})

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, Any]) -> None:
        """Per-epoch summaries (token_accuracy, loss, fully_memorized ...), written as `epoch/<name>`.

        TensorBoard and W&B plot them against the epoch number, the x axis the paper uses.
        """
        values = _scalars(metrics)
        self.epochs[int(epoch)] = values
        if not self.enabled:
            return
        self._write(
            {"scope": "epoch", "step": int(step), "epoch": int(epoch), **{f"epoch/{k}": v for k, v in values.items()}}
        )
        if self._tb is not None:
            for name, v in values.items():
                if v is not None:
                    self._tb.add_scalar(f"epoch/{name}", v, int(epoch))
        self._wandb_log({**{f"epoch/{k}": v for k, v in values.items()}, "epoch": int(epoch), "step": int(step)})

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """A note in TensorBoard (the run config, the saturation stop); not in the JSONL, which holds floats."""
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, step)

    def plot(self, saturation_epoch: int | None = None) -> Path | None:
        """Write the per-epoch token accuracy and loss PNG; returns its path (None when disabled or no epochs)."""
        if not self.enabled or not self.epochs:
            return None
        epochs = sorted(self.epochs)
        col = lambda name: [np.nan if self.epochs[e].get(name) is None else self.epochs[e][name] for e in epochs]
        held_out = col("eval_avg@n") if any("eval_avg@n" in self.epochs[e] for e in epochs) else None
        has_val = any("val_loss" in self.epochs[e] for e in epochs)
        return plot_epoch_curves(
            epochs,
            col("token_accuracy"),
            col("loss"),
            self.plot_path,
            saturation_epoch,
            held_out_accuracy=held_out,
            validation=(col("val_token_accuracy"), col("val_loss")) if has_val else None,
        )

    def close(self, saturation_epoch: int | None = None, summary: Mapping[str, Any] | None = None) -> Path | None:
        """Flush and close the files and write the plot; returns the plot path. W&B also gets the plot and
        `summary` (the run's summary.json, None values left out) and its run is finished."""
        path = self.plot(saturation_epoch)
        self._close_files()
        if self._wandb is not None:
            run, self._wandb = self._wandb, None
            import wandb

            if path is not None and path.exists():
                run.log({"plot/token_accuracy_loss": wandb.Image(str(path))})
            run.summary.update({k: v for k, v in (summary or {}).items() if _present(v)})
            run.finish()
        return path

    def _close_files(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_epoch_curves(
    epochs: list[int],
    token_accuracy: list[float],
    loss: list[float],
    path: str | Path,
    saturation_epoch: int | None = None,
    held_out_accuracy: list[float] | None = None,
    validation: tuple[list[float], list[float]] | None = None,
) -> Path:
    """Two panels, token accuracy and loss per epoch, with the saturation epoch as a dashed vertical line;
    held-out accuracy and validation token accuracy / loss (NaN where not evaluated) beside them when given.

    Uses matplotlib's Agg canvas directly, so it never changes the process-wide backend (notebooks keep theirs).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 2)
    for ax, values, label in zip(panels, (token_accuracy, loss), ("token accuracy (response)", "loss")):
        ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if saturation_epoch is not None:
            label = f"saturation (epoch {saturation_epoch})"
            ax.axvline(saturation_epoch, color="tab:red", linestyle="--", label=label)
            ax.legend(loc="best")
    if held_out_accuracy is not None:
        x, y = np.asarray(epochs, float), np.asarray(held_out_accuracy, float)
        keep = np.isfinite(y)
        panels[0].plot(x[keep], y[keep], marker="s", markersize=4, color="tab:green", label="held-out accuracy")
        panels[0].set_ylabel("accuracy")
        panels[0].legend(loc="best")
    if validation is not None:
        x = np.asarray(epochs, float)
        for ax, values, label in zip(panels, validation, ("validation token accuracy", "validation loss")):
            y = np.asarray(values, float)
            keep = np.isfinite(y)
            ax.plot(x[keep], y[keep], marker="^", markersize=4, linestyle="--", color="tab:purple", label=label)
            ax.legend(loc="best")
    panels[0].set_ylim(0.0, 1.02)
    finite_loss = np.asarray(loss, float)[np.isfinite(np.asarray(loss, float))]
    panels[1].set_yscale("log" if np.all(finite_loss > 0) else "linear")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


class ProgressBar:
    """Epoch, step, loss, token accuracy and tokens/s, live.

    On a TTY (or in a Jupyter kernel) it is a tqdm bar. Elsewhere (CI logs, `nohup`, a file) carriage-return
    redraws would pile up, so it prints one plain line every `interval_s` seconds instead. Silent off process 0.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        enabled: bool | None = None,
        desc: str = "train",
        stream: TextIO | None = None,
        interval_s: float = 30.0,
    ) -> None:
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.n, self.desc, self.interval_s = int(total), int(initial), desc, float(interval_s)
        self._last_print = -math.inf
        self._bar = None
        in_notebook = stream is None and "ipykernel" in sys.modules  # tqdm.auto draws a widget there
        if self.enabled and (in_notebook or getattr(self.stream, "isatty", lambda: False)()):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, file=self.stream, dynamic_ncols=True)

    def update(
        self,
        n: int = 1,
        *,
        epoch: int | None = None,
        step: int | None = None,
        loss: float | None = None,
        token_accuracy: float | None = None,
        tokens_per_s: float | None = None,
    ) -> None:
        self.n += n
        if not self.enabled:
            return
        fields = {"epoch": epoch, "step": step, "loss": loss, "tok_acc": token_accuracy, "tok/s": tokens_per_s}
        shown = {k: _fmt(v) for k, v in fields.items() if v is not None}
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_print >= self.interval_s or self.n >= self.total:
            self._last_print = now
            body = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"[{self.desc}] {self.n}/{self.total} {body}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(v: Any) -> str:
    v = float(v)
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3g}"
