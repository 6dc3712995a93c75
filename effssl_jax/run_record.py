"""What a run accumulates across resumes, saved with every checkpoint, and the summary made of it.

The paper compares strategies by training cost (FLOPs) and time, so these must survive a kill:
FLOPs and steps per resolution bucket, Hard Augment's selection FLOPs, evaluation FLOPs, the
clocks (wall-clock and the parts that are not training steps) and the latest kNN accuracies.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from effssl_jax import costs


@dataclasses.dataclass
class RunRecord:
    flops_by_resolution: dict[str, float] = dataclasses.field(default_factory=dict)
    steps_by_resolution: dict[str, int] = dataclasses.field(default_factory=dict)
    selection_flops: float = 0.0
    eval_flops: float = 0.0
    knn_top1_init: float | None = None
    knn_top1: float | None = None
    wall_clock_s: float = 0.0
    compile_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_s: float = 0.0
    data_iterator: dict | None = None  # the loader's state at the checkpoint (data/grain_loader.py)
    num_examples: int | None = None  # the size of the dataset the run's plan was made for

    @classmethod
    def from_dict(cls, d: dict) -> RunRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def add_step(self, resolution: int, flops: float, selection_flops: float) -> None:
        key = str(resolution)
        self.flops_by_resolution[key] = self.flops_by_resolution.get(key, 0.0) + flops
        self.steps_by_resolution[key] = self.steps_by_resolution.get(key, 0) + 1
        self.selection_flops += selection_flops

    @property
    def steps(self) -> int:
        """The steps trained so far."""
        return sum(self.steps_by_resolution.values())

    @property
    def train_flops(self) -> float:
        return sum(self.flops_by_resolution.values())

    @property
    def train_time_s(self) -> float:
        """Wall-clock seconds so far less compile, eval and checkpoint time."""
        return self.wall_clock_s - self.compile_s - self.eval_s - self.checkpoint_s


class Stopwatch:
    """Adds wall-clock time to a RunRecord: in total (`tick`) and, under `excluded(field)`, the
    parts that are not training steps."""

    def __init__(self, record: RunRecord):
        self.record = record
        self._last = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.record.wall_clock_s += now - self._last
        self._last = now

    @contextlib.contextmanager
    def excluded(self, field: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.record, field, getattr(self.record, field) + time.perf_counter() - t0)


def summary(config, plan, record: RunRecord, cost: costs.RunCost, skipped_images: int) -> dict:
    """summary.json: what the run is, the kNN accuracy it reached, what it cost (every cost key
    comes from costs.RunCost) and the undecodable images this process met."""
    steps = record.steps
    return {
        "name": config.name, "method": config.method, "lr_schedule": config.optim.schedule,
        "resolution_schedule": config.progressive.schedule,
        "hard_augment": bool(config.hard_augment.enabled), "steps": steps,
        "epochs": plan.epoch(steps), "knn_top1_init": record.knn_top1_init,
        "knn_top1": record.knn_top1, **cost.to_dict(), "skipped_images": skipped_images}
