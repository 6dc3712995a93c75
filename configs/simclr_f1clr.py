"""SimCLR (Chen et al. 2020): NT-Xent over the global batch, temperature 0.2 (solo-learn
ImageNet-100).

Optimiser, schedule, resolution and Hard Augment: the paper's efficient recipe
(common.imagenette_efficient, as configs/simsiam_f1clr.py): the paper uses the same optimiser and
augmentation hyper-parameters for every method (Sec. 4.2). Here the views follow SimCLR's own
augmentation recipe (augment.recipe 'method'; the paper's setting: --config.augment.recipe=paper);
the method's own hyper-parameters are in config_schema.py (c.simclr) with their sources, and the
recipe's, in effssl_jax/methods/simclr.py."""
from configs import common


def get_config(arg=None):
    return common.imagenette_efficient(common.imagenette_baseline("simclr_f1clr", "simclr"))
