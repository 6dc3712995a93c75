"""The metrics viewers SSL researchers watch runs in, fed the same records as metrics.jsonl:
TensorBoard event files in WORKDIR/tensorboard (tensorboardX: no TensorFlow) and, optionally,
Weights & Biases (`--config.viewers.wandb=online|offline`; offline needs no network, and
`wandb sync WORKDIR/wandb/offline-run-*` uploads it later). Process 0 only (run_log.RunLog).

A resumed run continues the same curves: TensorBoard drops the events from the resumed step on
(`purge_step`; from step 0 when a run starts afresh), as metrics.jsonl drops its lines, and W&B
resumes the run whose id is kept in WORKDIR/wandb_run_id.
"""
from __future__ import annotations

import numbers
import os
import uuid

from effssl_jax.errors import ConfigError

NOT_PLOTTED = ("step",)


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k not in NOT_PLOTTED and isinstance(v, numbers.Real) and not isinstance(v, bool)}


class Viewers:
    def __init__(self, workdir: str, config, resume_step: int = 0):
        v = config.viewers
        self._tensorboard = self._wandb = None
        if v.tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:
                raise ConfigError("TensorBoard logging needs tensorboardX: pip install "
                                  "tensorboardX, or --config.viewers.tensorboard=False") from e
            self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                              purge_step=resume_step)
        if v.wandb:
            try:
                import wandb
            except ImportError as e:
                raise ConfigError("--config.viewers.wandb needs Weights & Biases: pip install "
                                  "wandb, or leave --config.viewers.wandb empty") from e
            self._wandb = wandb.init(project=v.wandb_project, name=config.name or None,
                                     dir=workdir, mode=v.wandb, id=_run_id(workdir),
                                     resume="allow", config=config.to_dict())

    def write(self, record: dict) -> None:
        step, scalars = int(record.get("step", 0)), _scalars(record)
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(name, value, step)
        if self._wandb is not None and scalars:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _run_id(workdir: str) -> str:
    """The W&B run id of this workdir, made at its first run (so a resume logs to the same run)."""
    path = os.path.join(workdir, "wandb_run_id")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(uuid.uuid4().hex[:12])
    with open(path) as f:
        return f.read().strip()
