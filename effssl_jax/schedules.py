"""Learning-rate, momentum and EMA schedules as optax-style functions of the step.

Each `*_schedule` returns `f(step) -> scalar`, usable as an `optax.Schedule` (also with a traced
step inside `optax.inject_hyperparams`). Equation numbers refer to Kocyigit et al., WACV 2023.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from effssl_jax.errors import ConfigError

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def _half_cosine(progress):
    """1 -> 0 as progress goes 0 -> 1: (cos(pi * p) + 1) / 2, progress clipped to [0, 1]."""
    return 0.5 * (jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)) + 1.0)


def constant_schedule(value: float) -> Schedule:
    return lambda step: jnp.full((), value, jnp.float32)


def cosine_schedule(peak: float, total_steps: int) -> Schedule:
    """Cosine annealing from `peak` to 0 (eq. 5)."""
    def schedule(step):
        return peak * _half_cosine(step / total_steps)
    return schedule


def warmup_cosine_schedule(peak: float, warmup_steps: int, total_steps: int) -> Schedule:
    """Linear warm-up to `peak`, then cosine decay to 0 (eq. 6)."""
    def schedule(step):
        warm = peak * step / max(warmup_steps, 1)
        decay = peak * _half_cosine((step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return jnp.where(step < warmup_steps, warm, decay)
    return schedule


def f1clr_schedule(peak: float, warmup_steps: int, total_steps: int) -> Schedule:
    """F1-CLR learning rate (eq. 8): half-cosine rise from 0 to `peak` over a *fixed* number of
    warm-up steps, then cosine decay to 0 over the rest of training."""
    def schedule(step):
        rise = peak - peak * _half_cosine(step / max(warmup_steps, 1))
        decay = peak * _half_cosine((step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return jnp.where(step < warmup_steps, rise, decay)
    return schedule


def f1clr_momentum_schedule(low: float, high: float, warmup_steps: int,
                            total_steps: int) -> Schedule:
    """F1-CLR momentum (eq. 8), anti-phased with the learning rate: `high` at the start,
    `low` when the learning rate peaks, back to `high` at the end."""
    def schedule(step):
        fall = low + (high - low) * _half_cosine(step / max(warmup_steps, 1))
        rise = high - (high - low) * _half_cosine(
            (step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return jnp.where(step < warmup_steps, fall, rise)
    return schedule


def one_cycle_schedule(peak: float, phase_fraction: float, total_steps: int) -> Schedule:
    """1-CLR learning rate (eq. 7): F1-CLR whose warm-up is a fraction rho of training."""
    return f1clr_schedule(peak, round(phase_fraction * total_steps), total_steps)


def one_cycle_momentum_schedule(low: float, high: float, phase_fraction: float,
                                total_steps: int) -> Schedule:
    """1-CLR momentum (eq. 7)."""
    return f1clr_momentum_schedule(low, high, round(phase_fraction * total_steps), total_steps)


def ema_cosine_schedule(base: float, total_steps: int) -> Schedule:
    """BYOL target momentum: tau = 1 - (1 - base) * (cos(pi k / K) + 1) / 2, base -> 1."""
    def schedule(step):
        return 1.0 - (1.0 - base) * _half_cosine(step / total_steps)
    return schedule


def cosine_between_schedule(start: float, end: float, total_steps: int) -> Schedule:
    """Half-cosine from `start` to `end` over training: end + (start - end) (cos(pi k / K) + 1) / 2
    (DINO's utils.cosine_scheduler without warm-up, as its weight decay 0.04 -> 0.4 uses; MoCo
    v2+'s target momentum base -> final_tau, solo-learn's cosine momentum)."""
    def schedule(step):
        return end + (start - end) * _half_cosine(step / total_steps)
    return schedule


def exponential_schedule(start: float, end: float, total_steps: int) -> Schedule:
    """Exponential rise from `start` to `end` (the LR range test of Smith, 2018)."""
    def schedule(step):
        return start * (end / start) ** (step / max(total_steps - 1, 1))
    return schedule


def from_config(optim, total_steps: int, warmup_steps: int) -> tuple[Schedule, Schedule]:
    """(learning rate, momentum) schedules of config.optim over a plan's steps."""
    kind = optim.schedule
    constant_momentum = constant_schedule(optim.momentum)
    if kind == "cosine":
        return cosine_schedule(optim.lr, total_steps), constant_momentum
    if kind == "warmup_cosine":
        return warmup_cosine_schedule(optim.lr, warmup_steps, total_steps), constant_momentum
    if kind == "f1clr":
        return (f1clr_schedule(optim.lr, warmup_steps, total_steps),
                f1clr_momentum_schedule(optim.momentum_low, optim.momentum_high, warmup_steps,
                                        total_steps))
    if kind == "one_cycle":
        rho = optim.one_cycle_fraction
        return (one_cycle_schedule(optim.lr, rho, total_steps),
                one_cycle_momentum_schedule(optim.momentum_low, optim.momentum_high, rho,
                                            total_steps))
    if kind == "constant":
        return constant_schedule(optim.lr), constant_momentum
    if kind == "exponential":
        return exponential_schedule(*optim.lr_range, total_steps), constant_momentum
    raise ConfigError(f"unknown optim.schedule {kind!r}")
