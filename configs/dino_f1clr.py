"""DINO (Caron et al. 2021) with a ResNet backbone: DINO head with 4096 prototypes, teacher
temperature 0.04 -> 0.07 over 30 epochs, centre momentum 0.9, teacher tau 0.9995 -> 1 (small-batch
advice of the DINO repo).

Optimiser, schedule, resolution and Hard Augment settings as configs/simsiam_f1clr.py: the paper
uses the same optimiser and augmentation hyper-parameters for every method (Sec. 4.2). Here the
views follow DINO's own augmentation recipe (augment.recipe 'method'; the paper's setting:
--config.augment.recipe=paper); the method's own hyper-parameters are in config_schema.py
(c.dino) with their sources, and the recipe's, in effssl_jax/methods/dino.py.
"""
from configs import simsiam_f1clr


def get_config(arg=None):
    c = simsiam_f1clr.shared_config()
    c.name = "dino_f1clr"
    c.method = "dino"
    return c
