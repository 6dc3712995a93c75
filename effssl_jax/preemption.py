"""Stopping a run cleanly: SIGTERM (what Cloud TPU, GCE spot VMs, Kubernetes and SLURM send before
they take a machine back) and SIGINT (Ctrl-C) ask the loop to finish its current step, save a
checkpoint and exit with `EXIT_PREEMPTED`; the same signal again aborts at once.

With several processes, every host must save the same step: there SIGTERM goes through JAX's
preemption service (`jax.distributed` installs it; `multihost_utils.reached_preemption_sync_point`
names the first step that every host reaches after the notice), and this module leaves SIGTERM
to it. SIGINT is local to one process and cannot be agreed, so there it aborts.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from orbax.checkpoint import utils as ocp_utils

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry". The run saved its
# checkpoint; rerunning the same command resumes it.
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """Raised by the loop once the checkpoint asked for by a signal is saved."""

    def __init__(self, step: int, signame: str):
        super().__init__(f"stopped by {signame} after step {step}; its checkpoint is saved: "
                         "rerun the same command to resume")
        self.step = step


class StopSignals:
    """A context manager that turns SIGTERM/SIGINT into a request the loop polls with
    `requested(step)`. Handlers are only installed in the main thread (Python's rule)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        signals = [signal.SIGINT] if jax.process_count() > 1 else [signal.SIGTERM, signal.SIGINT]
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal is not None or jax.process_count() > 1:
            print(f"\n{name} again: aborting without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signal = signum
        print(f"\n{name}: finishing this step and saving a checkpoint, then exiting with "
              f"{EXIT_PREEMPTED} ({name} again aborts at once)", file=sys.stderr, flush=True)

    @property
    def signame(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "SIGTERM"

    def requested(self, step: int) -> bool:
        """True when a checkpoint should be saved at `step` and the run should exit: a signal
        here, or (several processes) the step every host agreed on after a preemption notice.
        Called at every step on every process."""
        if jax.process_count() > 1:
            return ocp_utils.reached_preemption(step)
        return self.signal is not None
