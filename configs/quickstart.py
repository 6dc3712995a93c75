"""Quickstart: SimCLR on a slim ResNet-18 (width 32, ImageNet stem) with 32 px images of the
embedded synthetic shapes dataset (4096 train / 1024 test images): offline and short enough for a
2-core CPU. Logs kNN accuracy on the test split at initialisation and every 5 epochs.

SimCLR because it learns within this budget (batch 128, 20 epochs: 640 steps), where the methods
without negatives (SimSiam, BYOL) stay near their initial accuracy. Other methods run with
`--config.method=NAME`; those need a longer run.

`--config configs/quickstart.py:RECIPE` (e.g. `:byol_f1clr`) runs a recipe of configs/ on the
quickstart's data and network: the recipe's method, lr schedule (warm-up as the same fraction of
training), Super Progressive Learning (16 -> 32 px in 8 px buckets) and Hard Augment (views scored
at 16 px). Recipes keep the quickstart budget, except SimSiam and BYOL (no negatives): they get
batch 32, 40 epochs and peak lr 0.05 (8x the steps): the budget on which BYOL was measured to learn
here (SimSiam rises only in its last epochs). Measured figures: results/README.md (Quickstart).
Every method augments with the paper's one setting (augment.recipe 'paper').
"""
import importlib

from effssl_jax.config_schema import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "quickstart"
    c.method = "simclr"
    c.dataset = "synthetic"
    c.synthetic_train_size = 4096
    c.synthetic_test_size = 1024
    c.model.arch = "resnet18"
    c.model.width = 32
    c.model.cifar_stem = False
    # The paper's augmentation setting, which the figures measured on this config were trained
    # with (results/README.md); --config.augment.recipe=method for the method's own recipe.
    c.augment.recipe = "paper"
    # Slim heads for the slim backbone (also used when switching --config.method).
    c.simsiam.proj_dim, c.simsiam.proj_layers, c.simsiam.pred_hidden = 512, 2, 128
    c.batch_size = 128
    c.epochs = 20
    c.optim.schedule = "cosine"
    c.optim.lr = 0.1
    c.optim.weight_decay = 5e-4
    c.progressive.r_max = 32
    c.eval.every_epochs = 5
    c.eval.crop_fraction = 1.0
    c.eval.knn_k = 20
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    return with_recipe(c, arg) if arg else c


def with_recipe(c, recipe: str):
    """The quickstart budget with RECIPE's method and strategies."""
    r = importlib.import_module(f"configs.{recipe}").get_config()
    c.name = f"quickstart_{recipe}"
    c.method = r.method
    lr = r.optim.lr
    if r.method in ("simsiam", "byol"):
        # Without negatives: twice the epochs at a quarter of the batch (8x the steps), lr 0.05.
        c.batch_size, c.epochs, lr = 32, 40, 0.05
    c.optim.update(schedule=r.optim.schedule, lr=lr, momentum=r.optim.momentum,
                   momentum_low=r.optim.momentum_low, momentum_high=r.optim.momentum_high,
                   warmup_epochs=r.optim.warmup_epochs / r.epochs * c.epochs)
    c.progressive.update(schedule=r.progressive.schedule, r_min=16, bucket_step=8)
    c.hard_augment.update(enabled=r.hard_augment.enabled, num_views=r.hard_augment.num_views,
                          r_sel=16)
    return c
