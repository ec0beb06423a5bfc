"""Preemption: SIGTERM sets a flag the loop polls between steps, then it saves and exits.

The handler only sets a flag (and calls an optional callback): saving from inside a signal handler could interrupt
a half-finished step or an orbax write. In a multi-host run the hosts may see the signal at different steps, so
`Preemption.agreed(step)` decides for all of them together, with one all-gather every `every_steps` steps (not one
host sync per step).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


class SigtermFlag:
    """Set by SIGTERM (preemption); the loop polls `requested` between steps, saves, and exits.

    The handler only sets a flag (and calls the optional callback): saving from inside a signal handler could
    interrupt a half-finished step or an orbax write. `uninstall()` (or leaving the `with` block) puts the previous
    handler back.
    """

    def __init__(self, callback: Callable[[int], None] | None, signals: tuple[int, ...]) -> None:
        self._event = threading.Event()
        self._callback = callback
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        self._event.set()
        if self._callback is not None:
            self._callback(signum)

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.signum = None

    def uninstall(self) -> None:
        """Restore the handlers that were installed before this one (idempotent)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> SigtermFlag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def install_sigterm_handler(
    callback: Callable[[int], None] | None = None, *, signals: tuple[int, ...] = (signal.SIGTERM,)
) -> SigtermFlag:
    """Install a flag-setting handler for SIGTERM (must run on the main thread, as Python signal handlers do).

    callback: called with the signal number from inside the handler; keep it tiny (a log line), never a save.
    Multi-host: processes may see the signal at different steps; the loop should agree on the flag across
    processes (e.g. `jax.experimental.multihost_utils.process_allgather(flag).any()`) before saving.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_sigterm_handler must be called from the main thread (Python signal rule)")
    return SigtermFlag(callback, tuple(signals))


class Preemption:
    """The SIGTERM flag of a run (a context manager) and the decision, agreed by every process, to stop."""

    def __init__(self, every_steps: int = 8) -> None:
        self.every_steps = every_steps
        self.flag: SigtermFlag | None = None

    def __enter__(self) -> Preemption:
        self.flag = install_sigterm_handler()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.flag is not None:
            self.flag.uninstall()

    def agreed(self, step: int) -> bool:
        """True when a SIGTERM reached this process (single host), or any process (checked every `every_steps`
        steps, the same steps on every host, so the all-gather always pairs up)."""
        requested = self.flag is not None and self.flag.requested
        if jax.process_count() == 1:
            return requested
        if step % self.every_steps:
            return False
        from jax.experimental import multihost_utils

        return bool(np.asarray(multihost_utils.process_allgather(np.asarray(requested))).any())
