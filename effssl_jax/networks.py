"""A config's method on its backbone: the networks a run trains (experiment.py) and whose cost in
the paper's convention is counted (costs.py)."""
from __future__ import annotations

from effssl_jax import methods
from effssl_jax.models import backbones


def build_method(config, dtype, steps_per_epoch: int, total_steps: int):
    """config.method's method on config.model's backbone, its two views augmented as
    config.augment says (the method's own recipe or the paper's, with any overrides)."""
    return methods.get_method(config, methods.MethodContext(
        backbone=backbones.from_config(config, dtype), feature_dim=backbones.feature_dim(
            config.model), view_configs=methods.view_configs(config),
        dtype=dtype, steps_per_epoch=steps_per_epoch, total_steps=total_steps))
