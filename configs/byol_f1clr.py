"""BYOL (Grill et al. 2020): predictor + EMA target, tau 0.99 -> 1 (solo-learn ImageNet-100);
asymmetric blur/solarize views.

Optimiser, schedule, resolution and Hard Augment: common.imagenette_efficient (the paper trains
every method with one setting, Sec. 4.2). Views: BYOL's own recipe (effssl_jax/methods/byol.py; the
paper's setting: --config.augment.recipe=paper). The method's hyper-parameters: config_schema.py
(c.byol)."""
from configs import common


def get_config(arg=None):
    return common.imagenette_efficient(common.imagenette_baseline("byol_f1clr", "byol"))
