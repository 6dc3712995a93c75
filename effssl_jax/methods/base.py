"""What every SSL method provides to the train step.

A method is a small frozen dataclass with:
  net:        the online network (flax module; `__call__(x, train)` returns a dict of outputs)
  target_net: the EMA target/teacher network, or None
  ema_schedule: step -> tau of the target's EMA update (schedules.py), or None
  view_configs: augmentation settings of the first and second view (cycled for more views)
  init_state() -> pytree of method state (MoCo queue, DINO centre), {} if none
  pair_loss(online_a, online_b, target_a, target_b, state, step) -> [B] per-sample symmetric loss
  update_state(state, online_a, online_b, target_a, target_b, step) -> new state
  adjust_updates(updates, step) -> the optimiser's parameter updates, changed where the method
                                   freezes part of its network (DINO's last layer)
and optionally, for multi-crop (augment.local_crops, multicrop.py):
  multicrop_loss(student_outputs, teacher_outputs, state, step) -> [B] per-sample loss of a
      method that trains its online network on the local crops too (DINO): student_outputs the
      online outputs of the two global views then of each local crop, teacher_outputs the
      target's of the two global views. A method without it uses the local crops as extra
      targets of its pair loss (multicrop.extra_target_loss).
`MethodDefaults` provides the stateless, nothing-frozen versions.
Methods know nothing of data, optimisers or devices.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from effssl_jax.augment import ViewConfig


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a method's `make(cfg, context)` may use besides its own config sub-dict."""
    backbone: nn.Module
    feature_dim: int
    view_configs: tuple[ViewConfig, ViewConfig]  # the two views' (recipes.view_configs)
    dtype: Any
    steps_per_epoch: int
    total_steps: int


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(||x||, eps), as torch.nn.functional.normalize."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def negative_cosine(p, z):
    """Per-sample -cos(p, stopgrad(z)) (SimSiam's D)."""
    return -jnp.sum(l2_normalize(p) * l2_normalize(jax.lax.stop_gradient(z)), axis=-1)


class MethodDefaults:
    """No method state (queue, centre), nothing frozen."""

    def init_state(self):
        return {}

    def update_state(self, state, *unused):
        return state

    def adjust_updates(self, updates, step):
        del step
        return updates
