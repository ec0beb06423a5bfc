"""The training loop: epochs over a fixed training set, stopped when training token accuracy saturates.

A thin shell around pure pieces: data (`bitune_jax.data`), the jitted step (`step.py`), checkpoints, logs and the
saturation rule. Everything the loop needs to resume exactly (state, data position, epoch accumulators, history)
goes into each checkpoint, so a killed run restarted with the same command continues bit for bit.

Why this module is longer than ~400 lines: `_Trainer` is the one owner of a run's mutable state (the step count, the
state on the device, the data position, the progress record, the compiled steps), and rollbacks, anneals, saves and
evaluations each change several of those at once. Every pure part lives in its own module (`setup`, `step`,
`progress`, `saturation`, `divergence`, `epoch_stats`, `summary`); what stays here is the order they run in.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from bitune_jax.data import PackedBatch, SFTBatch
from bitune_jax.data.packing import padding_fraction
from bitune_jax.kernels.self_check import fallbacks as kernel_fallbacks
from bitune_jax.train import checkpointing, divergence, epoch_stats, run_record, saturation
from bitune_jax.train.disk_full import disk_full_reported
from bitune_jax.train.divergence import NonFiniteLossError
from bitune_jax.train.host_hints import hints_for_this_host
from bitune_jax.train.performance import MAX_STEPS_IN_FLIGHT, InFlight, StepPerformance
from bitune_jax.train.preemption import Preemption
from bitune_jax.train.progress import Progress, due
from bitune_jax.train.run_log import ProgressBar, RunLogger
from bitune_jax.train.setup import build_run, check_architecture, maybe_init_distributed, optimizer_from_config
from bitune_jax.train.sharding import global_batch, row_multiple
from bitune_jax.train.spec import RunSpec
from bitune_jax.train.step import StepCache, per_step, warmup_updates
from bitune_jax.train.summary import mixing_alphas, run_summary
from bitune_jax.train.validate import validate
from bitune_jax.train.workdir_lock import hold_workdir

__all__ = ["NonFiniteLossError", "run"]


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


def run(config: ConfigDict) -> dict[str, Any]:
    """Train as `config` says; returns (and writes to `workdir/summary.json`) what happened.

    Before any weight or data is read: the config is validated, the workdir locked (`hold_workdir`), and a resume
    checked against the run it continues (`run_record`)."""
    maybe_init_distributed(config.distributed)  # before validating: the device count needs the runtime
    spec = validate(config, jax.device_count())  # the typed spec every step below reads
    workdir = pathlib.Path(spec.workdir)
    is_main = jax.process_index() == 0
    with hold_workdir(workdir), disk_full_reported(workdir):
        saved = checkpointing.committed_steps(workdir / "checkpoints")
        notes, record = run_record.check_resume(workdir, spec, resuming=bool(saved), step=saved[-1] if saved else None)
        if saved and run_record.allows(spec, "model.name"):  # other weights, yes; another architecture, never
            check_architecture(workdir / "checkpoints", saved[-1], spec.model.name)
        for line in notes if is_main else ():
            print(line, flush=True)
        return _train(spec, workdir, is_main, record)


def _train(spec: RunSpec, workdir: pathlib.Path, is_main: bool, record: dict[str, Any] | None) -> dict[str, Any]:
    trainer = _Trainer(spec, workdir, is_main, record)
    trainer.evaluate_at_start()
    with Preemption() as preemption:
        while True:  # one pass, or more after divergence rollbacks
            try:
                trainer.train(preemption)
                break
            except divergence.Diverged as diverged:
                trainer.roll_back(diverged)
    return trainer.finish()


class _Trainer:
    """One run's mutable state and its periodic actions (log, save, evaluate, roll back), so the loop itself
    (`train`) reads as what happens each step and each epoch. Built by `_train` after the workdir is locked."""

    def __init__(self, spec: RunSpec, workdir: pathlib.Path, is_main: bool, record: dict[str, Any] | None):
        self.spec, self.workdir, self.is_main = spec, workdir, is_main
        parts = build_run(spec)
        self.mesh, self.shell, self.objective, self.evals = parts.mesh, parts.shell, parts.objective, parts.evals
        self.report, self.training_rows = parts.training.report, parts.training.rows
        self.batches, self.steps_per_epoch = parts.batches, parts.batches.batches_per_epoch
        # A batch is one step; `train.accumulate` steps make one optimizer update, the schedule's clock.
        self.accumulate, self.total_updates = spec.train.accumulate, parts.total_updates
        self.total_steps = self.planned_steps = parts.total_steps
        self.schedule, self.optimizer = parts.schedule, parts.optimizer
        self.state, self.frozen = parts.state, parts.frozen
        self.state_sh, self.frozen_sh = parts.state_shardings, parts.frozen_shardings
        halt = spec.train.on_nonfinite != "skip_batch"
        self.steps = StepCache(self.objective, self.state_sh, self.frozen_sh, self.mesh, halt_on_nonfinite=halt)
        self.steps.replan(self.optimizer, per_step(self.schedule, self.accumulate))
        self._restore(parts.model_cfg, record)
        self._open_logs(parts.source, parts.model_cfg)

    def _restore(self, cfg, record: dict[str, Any] | None) -> None:
        """The checkpointer, and the newest readable checkpoint's state and progress if there is one."""
        spec, workdir, is_main = self.spec, self.workdir, self.is_main
        self.ckpt = checkpointing.Checkpointer(
            workdir / "checkpoints",
            keep=spec.checkpoint.keep,
            async_save=spec.checkpoint.async_save,
            fingerprint=checkpointing.model_fingerprint(
                run_record.weights_identity(spec.model.name), cfg, self.state.trainable
            ),
            unchecked=("model_name",) if run_record.allows(spec, "model.name") else (),
        )
        self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self.data = self.batches.iterator()  # the position of the next batch; its state goes into checkpoints
        self.progress = Progress()  # what a checkpoint carries besides the weights and the data position
        self.stats = jax.device_put(epoch_stats.empty(self.batches.num_examples), self.replicated)
        self.logged_samples = (0.0, 0)  # at the last log step: the window of the next one starts here
        restored = self.ckpt.restore_newest_readable(
            abstract_state=self.state, report=print if is_main else lambda _: None
        )
        self.resumed_from = None
        if restored is not None:
            self.resumed_from, self.state, meta = restored
            self._restore_progress(meta)
        if (
            self.progress.anneal is not None or self.progress.recovery.lr_scale != 1.0
        ):  # resumed inside an anneal or after a rollback
            self._replan()
        if is_main and record is not None:  # the run is under way (its checkpoint, if any, restored)
            run_record.write_record(workdir, record)

    def _open_logs(self, source: str, cfg) -> None:
        """Logs, the start-of-run lines, performance accounting and the step counters."""
        spec, is_main, objective, mesh, accumulate = self.spec, self.is_main, self.objective, self.mesh, self.accumulate
        self.logger = RunLogger(
            self.workdir,
            enabled=is_main,
            tensorboard=spec.log.tensorboard,
            resume_step=self.resumed_from or 0,  # a fresh start (a kill before the first save) replays every row
            closed_epochs=-1 if self.resumed_from is None else len(self.progress.history),
            wandb=spec.log.wandb,
            config=spec.to_dict(),
        )
        self._print(f"data: {self.batches.num_examples} examples from {source}; {self.report.summary()}")
        self._print(
            f"training {spec.objective} on {spec.model.name}: {spec.train.epochs} epochs x "
            f"{self.steps_per_epoch} steps = {self.total_steps} steps"
            + (f" = {self.total_updates} updates of {accumulate} accumulated steps" if accumulate > 1 else "")
            + (f"; resuming after step {self.resumed_from}" if self.resumed_from is not None else "")
        )
        self.perf = StepPerformance.create(
            objective.kind, self.frozen if objective.kind != "full" else self.state.trainable, cfg, spec.model.dtype
        )
        self._print(
            f"mesh {dict(mesh.shape)} on {jax.device_count()} devices; MFU against the {self.perf.peak_source} "
            f"x {jax.device_count()}"
        )
        for line in hints_for_this_host(jax.default_backend()):
            self._print(line)
        self.rows = row_multiple(mesh)  # batches get target-free filler rows up to a multiple of data x fsdp
        self.bar = ProgressBar(self.total_steps, initial=int(self.state.step), enabled=is_main)
        self.step = int(self.state.step)  # the host's count of steps: the loop never waits on the device to know it
        self.in_flight = InFlight(MAX_STEPS_IN_FLIGHT)
        self.advance = jax.jit(lambda s: s._replace(step=s.step + 1), out_shardings=self.state_sh, donate_argnums=0)
        self.tokens_per_s = 0.0
        self.shown: dict[str, float] = {}  # the progress bar's values, from the latest log step
        self.warmup_updates = warmup_updates(spec.train.warmup_frac, self.total_updates)
        self.unlogged_rows: list[int] = []  # training rows of the steps since the last logged one

    # ------------------------------------------------------------------------------------------------ the loop
    def train(self, preemption: Preemption) -> None:
        """Batches from the data iterator's position to the end of the plan (or a saturation stop); an epoch ends
        once the iterator has walked past its last batch (or the plan ends inside it)."""
        while True:
            epoch = self.data.epoch
            if (
                len(self.progress.history) < epoch
            ):  # every batch of the previous epoch is trained on (or resumed right after)
                if self._end_epoch(epoch - 1):
                    return
                continue
            if self.step >= self.total_steps or epoch >= self.spec.train.epochs:
                if self.data.index:  # the plan ended inside this epoch
                    self._end_epoch(epoch)
                return
            index = self.data.index
            self._train_step(epoch, index, next(self.data))
            if preemption.agreed(self.step):
                self.save(self.step, force=True)
                self.ckpt.close()
                raise SystemExit(
                    f"SIGTERM: saved step {self.step} in {self.ckpt.directory}; rerun the same command to resume"
                )
            if due(self.step, self.spec.checkpoint.every_steps):
                self.save(self.step)

    def _train_step(self, epoch: int, index: int, batch: SFTBatch | PackedBatch) -> None:
        """Dispatch one step and go on: the host prepares the next batch while the device runs this one."""
        spec, number = self.spec, epoch * self.steps_per_epoch + index
        skip = number in self.progress.recovery.skip  # a batch a rollback skips: consumed, never trained on
        if skip:
            self.state = self.advance(self.state)
        else:
            full = batch.pad_rows(self.rows, self.shell.pad_id)
            widths = full.widths(spec.data.pad_multiple)
            self.state, self.stats, metrics = self.steps.get(full, widths)(
                self.state, self.frozen, global_batch(full, self.mesh), self.stats, np.int32(number)
            )
            self.in_flight.add(metrics["loss"])
            self.tokens_per_s = self.perf.throughput.update(float(np.sum(full.length)))
            self.unlogged_rows += [int(self.training_rows[i]) for i in self.batches.epoch_plan(epoch)[index] if i >= 0]
        self.step += 1
        if due(self.step, spec.log.every_steps) and not skip:
            self._log_step(epoch, index, metrics, full, widths)
        self.bar.update(epoch=epoch, step=self.step, tokens_per_s=self.tokens_per_s, **self.shown)

    def _log_step(self, epoch: int, index: int, metrics, full, widths) -> None:
        seen = _samples_seen(self.read_stats())
        logged = _scalars(_read_device(metrics))
        if seen[1] > self.logged_samples[1]:  # the per-sample mean over the samples since the last log
            logged["sample_token_accuracy_window"] = (seen[0] - self.logged_samples[0]) / (
                seen[1] - self.logged_samples[1]
            )
        self.logged_samples = seen
        logged.pop("finite", None)
        logged.update(mixing_alphas(self.state.trainable, self.objective, per_layer=False))
        logged.update(self.perf.rates(self.tokens_per_s, full, widths[0]))
        logged["padding_fraction"] = padding_fraction(full)  # token slots of the step that hold padding
        self.logger.log(
            self.step, logged, epoch=epoch + (index + 1) / self.steps_per_epoch, example_rows=self.unlogged_rows
        )
        self.unlogged_rows = []
        self.shown = {"loss": logged["loss"], "token_accuracy": logged["token_accuracy"]}

    def _end_epoch(self, epoch: int) -> bool:
        """Close epoch `epoch` (0-based): statistics, saturation, evaluations, logs. True: the run ends here."""
        spec, rule = self.spec, self.spec.saturation
        host_stats = self.read_stats()
        epoch_metrics = epoch_stats.summary(host_stats)
        if int(host_stats.skipped):
            self._print(
                f"epoch {epoch + 1}: skipped {int(host_stats.skipped)} non-finite batches "
                "(train.on_nonfinite='skip_batch')"
            )
        if int(host_stats.skipped) and not int(host_stats.steps):
            self.ckpt.wait()
            raise NonFiniteLossError(
                f"every batch of epoch {epoch} was non-finite and skipped "
                f"(train.on_nonfinite='skip_batch'): the run diverged for good. Last known good "
                f"checkpoint: {self._known_good()}; lower train.lr or enable train.clip"
            )
        self.progress.history.append(epoch_metrics)
        self.stats = jax.device_put(epoch_stats.next_epoch(host_stats), self.replicated)
        self.logged_samples = (0.0, 0)
        self.data.set_state({"epoch": epoch + 1, "index": 0})  # also when the plan ended inside the epoch
        decision = saturation.check_saturation([h[rule.metric] for h in self.progress.history], rule)
        end_now = False
        if decision.stop and self.progress.saturated is None:
            update = self.step // self.accumulate
            self.progress.saturated = {
                "epoch": decision.saturation_epoch,
                "reason": decision.reason,
                "after_epoch": epoch + 1,
                "update": update,
            }
            length = saturation.anneal_length(rule, self.warmup_updates, update, self.total_updates)
            if rule.mode == "anneal" and length:
                self.progress.anneal = {"start": update, "length": length}
                self._replan()
                self._print(
                    f"saturated at epoch {decision.saturation_epoch} ({decision.reason}): annealing the learning "
                    f"rate from {float(self.schedule(update)):.3g} to 0 over {length} more updates"
                )
            end_now = rule.mode != "observe" and self.progress.anneal is None
        last = end_now or epoch + 1 == spec.train.epochs or self.step >= self.total_steps
        epoch_metrics.update(self._evaluate(epoch + 1, last))
        self.logger.log_epoch(epoch + 1, self.step, {**epoch_metrics, **decision.as_log()})  # 1-based
        self._print(
            f"epoch {epoch + 1}/{spec.train.epochs}: token accuracy {epoch_metrics['sample_token_accuracy']:.4f} "
            f"per sample, {epoch_metrics['token_accuracy']:.4f} per token, loss "
            f"{epoch_metrics['loss']:.4f}, memorized {epoch_metrics['memorized_fraction']:.2f}"
        )
        return end_now

    # ------------------------------------------------------------------------------------- reads, saves, plans
    def read_stats(self) -> epoch_stats.EpochStats:
        """The epoch statistics on the host; a step that went non-finite since the last read stops the run here
        (or, under "rollback", raises `divergence.Diverged` for the loop to roll back)."""
        host = _read_device(self.stats)
        if host.bad_batch >= 0:
            self.ckpt.wait()
            if self.spec.train.on_nonfinite == "rollback":
                raise divergence.Diverged(host)
            raise divergence.halted(host, self.steps_per_epoch, self.progress.windows, self.ckpt.directory)
        return host

    def save(self, step: int, force: bool = False) -> None:
        """Checkpoint `step` with everything a resume needs; judge its window and protect the last known good."""
        host = self.read_stats()
        window = divergence.judge(
            step,
            float(host.window_max_loss),
            float(host.window_max_grad_norm),
            self.progress.windows,
            self.spec.checkpoint.spike_factor,
        )
        with_window = dataclasses.replace(self.progress, windows=[*self.progress.windows, window])
        meta = with_window.to_meta(self.data.get_state(), epoch_stats.new_window(host), self.spec.to_dict())
        good = divergence.last_known_good([*self.progress.windows, window])
        self.ckpt.protect(set() if good is None else {good})
        if self.ckpt.save(step, self.state, meta, force=force):
            self.progress.windows.append(window)
            self.stats = jax.device_put(epoch_stats.new_window(host), self.replicated)

    def _restore_progress(self, meta: dict[str, Any], keep_recovery: bool = False) -> None:
        """The progress a checkpoint's metadata holds. A rollback (`keep_recovery`) keeps the windows and recovery
        it has in memory: they know of the divergence the checkpoint predates."""
        progress, data, stats = Progress.from_meta(meta)
        if keep_recovery:
            progress.windows, progress.recovery = self.progress.windows, self.progress.recovery
        self.progress = progress
        self.data.set_state(data)
        self.logged_samples = _samples_seen(stats)
        self.stats = jax.device_put(stats, self.replicated)

    def _replan(self) -> None:
        """Schedule, optimizer and step count for the current anneal and rollback state (steps recompile)."""
        # A save in flight holds a host copy of the state: let it land before the recompile allocates, or both
        # peak together (7.0-7.2 GB instead of 5.5 GB for the main job on SmolLM2).
        self.ckpt.wait()
        self.schedule, self.optimizer = optimizer_from_config(
            self.spec.train, self.total_updates, self.progress.anneal, self.progress.recovery.lr_scale
        )
        end = self.planned_steps
        if self.progress.anneal is not None:
            end = min(end, (self.progress.anneal["start"] + self.progress.anneal["length"]) * self.accumulate)
        self.total_steps = end
        self.steps.replan(self.optimizer, per_step(self.schedule, self.accumulate))

    def roll_back(self, diverged: divergence.Diverged) -> None:
        """Back to the last known good checkpoint, with the bad batch skipped and the learning rate scaled."""
        spec, good = self.spec, divergence.last_known_good(self.progress.windows)
        rollbacks = len(self.progress.recovery.rollbacks)
        why = divergence.why_no_rollback(
            self.progress.windows, rollbacks, spec.train.rollback_limit, self.ckpt.directory
        )
        if why is not None:
            raise NonFiniteLossError(
                f"{self._bad_step(diverged.stats)}; the update was not applied and the run stopped: {why}"
            ) from None
        self.progress.recovery = self.progress.recovery.after(
            int(diverged.stats.bad_batch), good, spec.train.rollback_lr_factor, found_at_step=self.step
        )
        moved = [self.ckpt.move_aside(s, "rolled_back") for s in self.ckpt.all_steps() if s > good]
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.state)
        self.state = None  # free the diverged state before the restore allocates the good one
        self.state, meta = self.ckpt.restore(good, abstract_state=target)
        self._restore_progress(meta, keep_recovery=True)
        self.progress.windows = [w for w in self.progress.windows if w.step <= good]
        self._replan()
        self.step, self.in_flight = int(self.state.step), InFlight(MAX_STEPS_IN_FLIGHT)
        set_aside = self.logger.rewind(good, closed_epochs=len(self.progress.history))
        self._print(
            f"{self._bad_step(diverged.stats)}: rolled back to step {good}, the last known good "
            f"checkpoint (rollback {len(self.progress.recovery.rollbacks)} of at most {spec.train.rollback_limit}); "
            f"that batch is skipped and the learning rate scaled by {self.progress.recovery.lr_scale:g}"
            + (f"; steps {[m.name for m in moved]} moved to {moved[0].parent}" if moved else "")
            + f"; the replaced log rows are in {set_aside}"
        )

    # ---------------------------------------------------------------------------------------------- evaluations
    def evaluate_at_start(self) -> None:
        """`eval.at_start`: the held-out and MMLU evals before the first update (logged as epoch 0)."""
        if not self.spec.eval.at_start or self.resumed_from is not None:
            return
        if self.evals.held_out is None and self.evals.mmlu is None:
            return
        self.progress.start_eval = self._evaluate(0, last=False)
        self.logger.log_epoch(0, 0, self.progress.start_eval)

    def _evaluate(self, epoch: int, last: bool) -> dict[str, float]:
        out_dir = self.workdir / "eval" if self.is_main else None
        return self.evals.run(epoch, self.state.trainable, self.frozen, last=last, out_dir=out_dir, say=self._print)

    # ------------------------------------------------------------------------------------------------ messages
    def _print(self, line: str) -> None:
        if self.is_main:
            print(line, flush=True)

    def _bad_step(self, stats: epoch_stats.EpochStats) -> str:
        return divergence.describe_bad_step(stats, self.steps_per_epoch)

    def _known_good(self) -> str:
        return divergence.known_good_text(self.progress.windows, self.ckpt.directory)

    # ----------------------------------------------------------------------------------------------------- end
    def finish(self) -> dict[str, Any]:
        """The final save, the summary (`workdir/summary.json`) and the plot."""
        self.bar.close()
        final_step = int(self.state.step)
        self.save(final_step, force=True)
        self.ckpt.close()
        rule, saturated = self.spec.saturation, self.progress.saturated
        summary = run_summary(
            self.progress,
            final_step=final_step,
            accumulate=self.accumulate,
            total_updates=self.total_updates,
            saturation_mode=rule.mode,
            truncation=self.report.summary(),
            checkpoint_dir=str(self.ckpt.directory),
            alphas=mixing_alphas(self.state.trainable, self.objective, per_layer=True),
        )
        plot = self.logger.close(saturation_epoch=None if saturated is None else saturated["epoch"], summary=summary)
        fallbacks = kernel_fallbacks()  # attention kernels that failed their self-check: which path ran, and why
        if fallbacks:
            summary["attention_fallbacks"] = fallbacks
            if self.is_main:
                run_record.add_to_record(self.workdir, "attention_fallbacks", fallbacks)
        if self.is_main:
            summary["plot"] = str(plot) if plot else None
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
            if saturated is not None:
                print(
                    f"saturated at epoch {saturated['epoch']} ({saturated['reason']}, mode {rule.mode}); "
                    f"{summary['saturation']['updates_saved']} of {self.total_updates} updates saved",
                    flush=True,
                )
        return summary


def _samples_seen(stats: epoch_stats.EpochStats) -> tuple[float, int]:
    """(sum of each sample's own token accuracy, samples) so far this epoch, on the host."""
    return float(stats.sample_accuracy), int(stats.samples)


def _read_device(tree):
    """Every read of device values in the loop goes through here (log steps, saves, epoch ends)."""
    return jax.device_get(tree)
