"""The metrics viewers SSL researchers watch runs in, fed the same records as metrics.jsonl:
TensorBoard event files in WORKDIR/tensorboard (tensorboardX: no TensorFlow) and, optionally,
Weights & Biases (`--config.viewers.wandb=online|offline`; offline needs no network, and
`wandb sync WORKDIR/wandb/offline-run-*` uploads it later). Process 0 only (run_log.RunLog).

A resumed run continues the same curves: TensorBoard drops the events from the resumed step on
(`purge_step`; from step 0 when a run starts afresh), as metrics.jsonl drops its lines, and W&B
resumes the run whose id is kept in WORKDIR/wandb_run_id.
"""
from __future__ import annotations

import io
import numbers
import uuid

from effssl_jax import storage
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
            if storage.is_remote(workdir):
                _route_tensorboard_through_storage(workdir.split("://", 1)[0])
            self._tensorboard = SummaryWriter(storage.join(workdir, "tensorboard"),
                                              purge_step=resume_step)
        if v.wandb:
            try:
                import wandb
            except ImportError as e:
                raise ConfigError("--config.viewers.wandb needs Weights & Biases: pip install "
                                  "wandb, or leave --config.viewers.wandb empty") from e
            self._wandb = wandb.init(project=v.wandb_project, name=config.name or None,
                                     dir=None if storage.is_remote(workdir) else workdir,
                                     mode=v.wandb, id=_run_id(workdir),
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


class _WholeObjectWriter:
    """tensorboardX's event-file writer for a bucket, through storage.py: the events are kept in
    memory and the whole object is written again at each of tensorboardX's flushes (every
    `flush_secs`, and at close), as tensorboardX's own gs:// writer does, but without a second
    client (its writer needs google-cloud-storage's, and uploads once more when collected)."""

    def __init__(self, path: str):
        self._path, self._buffer, self._written = path, io.BytesIO(), -1

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        if self._buffer.tell() != self._written:
            storage.write_bytes(self._path, self._buffer.getvalue())
            self._written = self._buffer.tell()

    def close(self) -> None:
        self.flush()


class _WholeObjectWriters:
    open = _WholeObjectWriter

    def directory_check(self, path: str) -> None:
        del path  # object stores have no directories


def _route_tensorboard_through_storage(scheme: str) -> None:
    from tensorboardX import record_writer
    record_writer.register_writer_factory(scheme, _WholeObjectWriters())


def _run_id(workdir: str) -> str:
    """The W&B run id of this workdir, made at its first run (so a resume logs to the same run)."""
    path = storage.join(workdir, "wandb_run_id")
    storage.create(path, uuid.uuid4().hex[:12])
    return storage.read_text(path).strip()
