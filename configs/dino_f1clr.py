"""DINO (Caron et al. 2021) with a ResNet backbone: DINO head with 4096 prototypes, teacher
temperature 0.04 -> 0.07 over 30 epochs, centre momentum 0.9, teacher tau 0.9995 -> 1 (small-batch
advice of the DINO repo).

Optimiser, schedule, resolution and Hard Augment: the paper's efficient recipe
(common.imagenette_efficient, as configs/simsiam_f1clr.py): the paper uses the same optimiser and
augmentation hyper-parameters for every method (Sec. 4.2). Here the views follow DINO's own
augmentation recipe (augment.recipe 'method'; the paper's setting: --config.augment.recipe=paper
--config.augment.crop_scale='()' --config.augment.local_crops.count=0, as it trains two views with
the setting's crop scale), with DINO's multi-crop as configs/dino_baseline.py
(common.dino_resnet_multi_crop: 8 local crops, 96 px at 224 and scaled with Super Progressive
Learning's resolution: 41 px at 96); the method's own hyper-parameters are in config_schema.py
(c.dino) with their sources, and the recipe's, in effssl_jax/methods/dino.py."""
from configs import common


def get_config(arg=None):
    c = common.imagenette_efficient(common.imagenette_baseline("dino_f1clr", "dino"))
    return common.dino_resnet_multi_crop(c)
