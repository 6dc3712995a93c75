"""BYOL (Grill et al. 2020): predictor + EMA target, tau 0.99 -> 1 (solo-learn ImageNet-100);
asymmetric blur/solarize views.

Optimiser, schedule, resolution and Hard Augment: the paper's efficient recipe
(common.imagenette_efficient, as configs/simsiam_f1clr.py): the paper uses the same optimiser and
augmentation hyper-parameters for every method (Sec. 4.2). Here the views follow BYOL's own
augmentation recipe (augment.recipe 'method'; the paper's setting: --config.augment.recipe=paper);
the method's own hyper-parameters are in config_schema.py (c.byol) with their sources, and the
recipe's, in effssl_jax/methods/byol.py."""
from configs import common


def get_config(arg=None):
    return common.imagenette_efficient(common.imagenette_baseline("byol_f1clr", "byol"))
