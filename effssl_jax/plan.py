"""The training plan: every number derived from a config and the dataset size, in one place.

Pure Python (schedules are optax-style functions): a plan can be built, printed and tested without
touching a device. The train loop asks the plan what to do at each step.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from effssl_jax import hard_augment, progressive, schedules
from effssl_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Plan:
    num_examples: int
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: Callable
    momentum: Callable
    stages: tuple[progressive.Stage, ...]
    resolution_schedule: str
    r_max: int
    magnitude_min: float
    magnitude_max: float
    hard_augment: bool
    num_views: int  # views augmented per image per step (2 without Hard Augment)
    selection_side: Callable[[int], int]  # step resolution -> Hard Augment's scoring side

    def stage(self, step: int) -> progressive.Stage:
        return progressive.stage_at(list(self.stages), step)

    def resolution(self, step: int) -> int:
        return self.stage(step).resolution

    def magnitude(self, step: int) -> float:
        return progressive.magnitude_at(self.resolution_schedule, step, self.total_steps,
                                        self.magnitude_min, self.magnitude_max)

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(sorted({s.resolution for s in self.stages}))

    def steps_by_resolution(self) -> dict[int, int]:
        return {r: sum(s.steps for s in self.stages if s.resolution == r)
                for r in self.resolutions}

    def describe(self) -> str:
        lines = [
            f"examples {self.num_examples}, global batch {self.batch_size}: "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps, "
            f"warm-up {self.warmup_steps} steps",
            f"lr {float(self.lr(0)):.4g} -> peak {max(float(self.lr(s)) for s in _probe(self)):.4g}"
            f" -> {float(self.lr(self.total_steps)):.4g}; momentum {float(self.momentum(0)):.3g}"
            f" .. {min(float(self.momentum(s)) for s in _probe(self)):.3g}",
            "resolution stages (epochs): " + ", ".join(
                f"{s.resolution}px [{s.start / self.steps_per_epoch:g}-"
                f"{s.end / self.steps_per_epoch:g})" for s in self.stages),
            f"augmentation magnitude {self.magnitude(0):.2f} -> "
            f"{self.magnitude(self.total_steps - 1):.2f}",
        ]
        if self.hard_augment:
            lines.append(f"hard augment: {self.num_views} views scored at " + ", ".join(
                f"{self.selection_side(r)}px (at {r}px)" for r in self.resolutions))
        return "\n".join(lines)


def _probe(plan: Plan):
    return range(0, plan.total_steps + 1, max(plan.total_steps // 200, 1))


def make_plan(config, num_examples: int) -> Plan:
    steps_per_epoch = num_examples // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the dataset has {num_examples} examples, fewer than one batch of "
                         f"{config.batch_size}; lower --config.batch_size")
    total_steps = max(round(config.epochs * steps_per_epoch), 1)
    warmup_steps = 0
    if config.optim.schedule in ("f1clr", "warmup_cosine"):
        warmup_steps = round(config.optim.warmup_epochs * steps_per_epoch)
    elif config.optim.schedule == "one_cycle":
        warmup_steps = round(config.optim.one_cycle_fraction * total_steps)
    lr, momentum = schedules.from_config(config.optim, total_steps, warmup_steps)
    p = config.progressive
    stages = progressive.resolution_stages(p.schedule, total_steps, warmup_steps, p.r_min,
                                           p.r_max, p.bucket_step)
    ha = config.hard_augment
    return Plan(
        num_examples=num_examples, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, warmup_steps=warmup_steps, lr=lr, momentum=momentum,
        stages=tuple(stages), resolution_schedule=p.schedule, r_max=p.r_max,
        magnitude_min=p.magnitude_min, magnitude_max=p.magnitude_max,
        hard_augment=bool(ha.enabled), num_views=ha.num_views if ha.enabled else 2,
        selection_side=functools.partial(hard_augment.selection_side,
                                         config.copy_and_resolve_references()))  # a copy: fixed
