"""Resolution and augmentation-magnitude plans (Sec. 3.2) and their predicted speed-up (eq. 9).

Pure Python: a plan is a list of `Stage`s covering [0, total_steps); the train loop looks up the
stage of each step on the host, and each distinct resolution is one compiled train step.
"""
from __future__ import annotations

import dataclasses

from effssl_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Stage:
    start: int  # first step (inclusive)
    end: int  # last step (exclusive)
    resolution: int

    @property
    def steps(self) -> int:
        return self.end - self.start


def _ramp(start: int, end: int, r_min: int, r_max: int, bucket_step: int) -> list[Stage]:
    """Linear rise from r_min to r_max over [start, end), quantised to multiples of
    `bucket_step` as equal-length stages r_min, r_min + bucket_step, ..., r_max."""
    n = (r_max - r_min) // bucket_step + 1
    bounds = [start + round(k * (end - start) / n) for k in range(n + 1)]
    return [Stage(bounds[k], bounds[k + 1], r_min + k * bucket_step)
            for k in range(n) if bounds[k + 1] > bounds[k]]


def check_resolutions(r_min: int, r_max: int, bucket_step: int) -> None:
    if not 0 < r_min <= r_max:
        raise ConfigError(f"resolution range [{r_min}, {r_max}] is empty; need 0 < r_min <= r_max")
    if bucket_step <= 0 or r_min % bucket_step or r_max % bucket_step:
        raise ConfigError(
            f"r_min={r_min} and r_max={r_max} must be multiples of bucket_step={bucket_step}; "
            f"set --config.progressive.bucket_step to a common divisor (e.g. 8 for small images)")


def resolution_stages(kind: str, total_steps: int, warmup_steps: int, r_min: int, r_max: int,
                      bucket_step: int) -> list[Stage]:
    """kind: 'fixed' (r_max throughout), 'progressive' (ramp from step 0, Tan & Le 2021) or
    'super_progressive' (r_max during the F1-CLR warm-up, then the ramp: Fig. 3 middle)."""
    if kind == "fixed":
        return [Stage(0, total_steps, r_max)]
    check_resolutions(r_min, r_max, bucket_step)
    if kind == "progressive":
        return _ramp(0, total_steps, r_min, r_max, bucket_step)
    if kind == "super_progressive":
        warmup_steps = min(warmup_steps, total_steps)
        head = [Stage(0, warmup_steps, r_max)] if warmup_steps > 0 else []
        return head + _ramp(warmup_steps, total_steps, r_min, r_max, bucket_step)
    raise ConfigError(f"unknown resolution schedule {kind!r}; "
                     "valid: 'fixed', 'progressive', 'super_progressive'")


def stage_at(stages: list[Stage], step: int) -> Stage:
    for stage in stages:
        if step < stage.end:
            return stage
    return stages[-1]


def magnitude_at(kind: str, step: int, total_steps: int, m_min: float, m_max: float) -> float:
    """Augmentation magnitude. With a progressive resolution plan it rises linearly from m_min to
    m_max over the whole run (Fig. 3 left: weak augmentation early, standard strength at the end);
    a fixed resolution uses the standard magnitude m_max throughout."""
    if kind == "fixed":
        return float(m_max)
    return float(m_min + (m_max - m_min) * min(step / max(total_steps - 1, 1), 1.0))


def predicted_speedup(stages: list[Stage], r_max: int) -> float:
    """Eq. 9's estimate, with cost quadratic in resolution: L / sum_t (r_t / r_max)^2.

    Eq. 9 as printed averages (r_max / r_t)^2, the *inverse* of each step's cost; that is not a
    ratio of total costs and overstates the speed-up (2.31x instead of 1.60x for the paper's
    96 -> 224 plan). The cost ratio used here reproduces Table 6 (1.40x / 1.60x / 1.82x)."""
    total = sum(s.steps for s in stages)
    cost = sum(s.steps * (s.resolution / r_max) ** 2 for s in stages)
    return total / cost


def measured_speedup(stages: list[Stage], flops: dict[int, float], r_max: int) -> float:
    """The cost ratio of eq. 9 with each step's cost measured instead of modelled as r^2:
    sum_t flops(r_max) / sum_t flops(r_t), `flops` holding the (forward) FLOPs at every stage's
    resolution and r_max. For backbones whose cost is not quadratic in resolution (a ViT's
    attention is quadratic in tokens, i.e. in r^2)."""
    total = sum(s.steps for s in stages)
    cost = sum(s.steps * flops[s.resolution] for s in stages)
    return total * flops[r_max] / cost
