"""SimCLR (Chen et al. 2020): NT-Xent over the global batch, temperature 0.2 (solo-learn
ImageNet-100).

Optimiser, schedule, resolution and Hard Augment: common.imagenette_efficient (the paper trains
every method with one setting, Sec. 4.2). Views: SimCLR's own recipe (effssl_jax/methods/simclr.py;
the paper's setting: --config.augment.recipe=paper). The method's hyper-parameters:
config_schema.py (c.simclr)."""
from configs import common


def get_config(arg=None):
    return common.imagenette_efficient(common.imagenette_baseline("simclr_f1clr", "simclr"))
