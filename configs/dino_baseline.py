"""DINO (Caron et al. 2021) with a ResNet backbone: DINO head with 4096 prototypes, teacher
temperature 0.04 -> 0.07 over 30 epochs, centre momentum 0.9, teacher tau 0.9995 -> 1 (small-batch
advice of the DINO repo).

Optimiser, schedule, resolution and Hard Augment settings as configs/simsiam_baseline.py: the paper
uses the same optimiser and augmentation hyper-parameters for every method (Sec. 4.2). Here the
views follow DINO's own augmentation recipe (augment.recipe 'method'; the paper's setting:
--config.augment.recipe=paper --config.augment.crop_scale='()'
--config.augment.local_crops.count=0, as it trains two views with the setting's crop scale),
with DINO's multi-crop as its README trains a ResNet-50 (`resnet_multi_crop`); the method's own
hyper-parameters are in config_schema.py (c.dino) with their sources, and the recipe's, in
effssl_jax/methods/dino.py.
"""
from configs import simsiam_baseline


def resnet_multi_crop(c):
    """DINO's multi-crop for a ResNet-50, facebookresearch/dino README.md:207 (commit 7c446df):
    `--global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14` with main_dino.py's default 8
    local crops (:112) of 96 px (:452) beside 224 px global crops. The global scale is set here
    because DINO's recipe with local crops takes main_dino.py's default 0.4 - 1 (methods/dino.py
    official_views), which the README's ResNet command overrides."""
    c.augment.local_crops.update(count=8, resolution=96, scale=(0.05, 0.14))
    c.augment.crop_scale = (0.14, 1.0)
    return c


def get_config(arg=None):
    c = simsiam_baseline.shared_config()
    c.name = "dino_baseline"
    c.method = "dino"
    return resnet_multi_crop(c)
