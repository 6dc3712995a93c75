"""Whether training is healthy, checked on each step's metrics once they are fetched from the
device: a non-finite loss, gradient or state, or an update larger than --config.optim.
max_update_ratio times the weights (step.py computes `healthy`), ends the run with a
DivergenceError naming the step and the last checkpoint, so that a diverged state is never saved.
Under --config.optim.on_nonfinite=skip the step kept its state and the run goes on, until
--config.optim.max_skipped_in_a_row such steps in a row.
"""
from __future__ import annotations

import math

from effssl_jax.errors import DivergenceError


class Health:
    def __init__(self, optim_config, last_checkpoint: int | None = None):
        self._skip = optim_config.on_nonfinite == "skip"
        self._max_skipped = optim_config.max_skipped_in_a_row
        self._max_update_ratio = optim_config.max_update_ratio
        self.skipped_in_a_row = 0
        self.last_checkpoint = last_checkpoint  # kept up to date by the loop, for the message

    def check(self, record: dict) -> None:
        """Raises DivergenceError if the step of `record` (its fetched metrics) ends the run."""
        if record.get("healthy", 1.0) == 1.0:
            self.skipped_in_a_row = 0
            return
        self.skipped_in_a_row += 1  # under 'skip' the step kept its state (step.py)
        if not self._skip or self.skipped_in_a_row >= self._max_skipped:
            raise DivergenceError(self._divergence(record))

    def _divergence(self, record: dict) -> str:
        ratio, limit = record.get("update_ratio", 0.0), self._max_update_ratio
        if not math.isfinite(record["loss"]):
            what = f"the loss is {record['loss']}"
        elif math.isfinite(ratio) and ratio > limit:
            what = (f"the update was {ratio:.3g}x the weights (more than "
                    f"--config.optim.max_update_ratio={limit:g})")
        else:
            what = ("the weights, batch-norm statistics or gradients are not finite (or their "
                    "norms overflow)")
        saved = ("no checkpoint was written" if self.last_checkpoint is None else
                 f"the last checkpoint, step {self.last_checkpoint}, is finite")
        if self._skip:
            what += f" ({self.skipped_in_a_row} updates in a row skipped)"
        return (f"training diverged at step {record['step']}: {what}; {saved}. Lower "
                "--config.optim.lr (or clip with --config.optim.clip_grad_norm) and rerun: it "
                "resumes from the last checkpoint")
