"""What a run accumulates across resumes, saved with every checkpoint, and the summary made of it.

The paper compares strategies by training cost (FLOPs) and time, so these must survive a kill:
FLOPs and steps per resolution bucket, Hard Augment's selection FLOPs, evaluation FLOPs, the
clocks (wall-clock and the parts that are not training steps) and the latest kNN accuracies.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

from effssl_jax import hard_augment


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


def summary(config, plan, record: RunRecord, gflops_per_step: dict, step: int,
            compiled_steps: int, skipped_images: int, pflops_paper: float,
            baseline: dict | None = None) -> dict:
    """summary.json: what the run cost and reached (FLOPs in XLA's and the paper's conventions,
    costs.py)."""
    train_flops = record.train_flops
    out = {
        "name": config.name, "method": config.method, "lr_schedule": config.optim.schedule,
        "resolution_schedule": config.progressive.schedule,
        "hard_augment": bool(config.hard_augment.enabled), "steps": step,
        "epochs": plan.epoch(step), "knn_top1_init": record.knn_top1_init,
        "knn_top1": record.knn_top1, "wall_clock_s": round(record.wall_clock_s, 2),
        "train_time_s": round(record.train_time_s, 2),
        "compile_s": round(record.compile_s, 2), "eval_s": round(record.eval_s, 2),
        "total_pflops": train_flops / 1e15, "pflops_paper": pflops_paper,
        "eval_pflops": record.eval_flops / 1e15,
        "selection_pflops": record.selection_flops / 1e15,
        "selection_overhead": record.selection_flops / max(train_flops, 1e-9),
        "selection_overhead_eq11": hard_augment.overhead_eq11(
            record.steps_by_resolution, plan.r_sel, plan.num_views) if plan.hard_augment else 0.0,
        "pflops_by_resolution": {k: v / 1e15 for k, v in record.flops_by_resolution.items()},
        "steps_by_resolution": record.steps_by_resolution,
        "gflops_per_step": gflops_per_step,
        "predicted_speedup_resolution": plan.predicted_speedup,  # measured FLOPs for ViTs
        "predicted_speedup_basis": plan.predicted_speedup_basis,
        "predicted_speedup_eq9": plan.predicted_speedup_r2,
        "compiled_steps": compiled_steps,
        "skipped_images": skipped_images,  # undecodable files met by this process
    }
    if baseline is not None:
        out["speedup_vs"] = {"workdir": config.compare_to,
                             "flops": baseline["total_pflops"] / out["total_pflops"],
                             "flops_paper": (baseline["pflops_paper"] / pflops_paper
                                             if baseline.get("pflops_paper") else None),
                             "train_time": baseline["train_time_s"] / max(out["train_time_s"],
                                                                          1e-9)}
    return out
