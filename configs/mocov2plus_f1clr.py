"""MoCo v2+ (solo-learn): symmetric InfoNCE against a 4096-key queue per view (sized to Imagenette's
9.5k images), temperature 0.2, momentum encoder tau 0.99 -> 0.999.

Optimiser, schedule, resolution and Hard Augment: the paper's efficient recipe
(common.imagenette_efficient, as configs/simsiam_f1clr.py): the paper uses the same optimiser and
augmentation hyper-parameters for every method (Sec. 4.2). Here the views follow MoCo v2's own
augmentation recipe (augment.recipe 'method'; the paper's setting: --config.augment.recipe=paper);
the method's own hyper-parameters are in config_schema.py (c.mocov2plus) with their sources, and
the recipe's, in effssl_jax/methods/mocov2plus.py."""
from configs import common


def get_config(arg=None):
    return common.imagenette_efficient(common.imagenette_baseline("mocov2plus_f1clr", "mocov2plus"))
