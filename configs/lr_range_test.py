"""LR range test (Smith 2018) to choose F1-CLR's eps_max: exponentially rising lr over 2 epochs.

  python launch.py --config configs/lr_range_test.py:byol --config.dataset=synthetic
Writes lr_range.csv / lr_range.png and prints the suggested --config.optim.lr.
The argument picks the method (default simsiam); other settings as in the method's f1clr recipe.
"""
from effssl_jax.config_schema import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "lr_range_test"
    c.mode = "lr_range_test"
    c.method = arg or "simsiam"
    c.dataset = "imagenette"
    c.model.arch = "resnet50"
    c.batch_size = 128
    c.epochs = 2
    c.optim.schedule = "exponential"
    c.optim.lr_range = (1e-4, 10.0)
    c.optim.momentum = 0.9
    c.progressive.schedule = "fixed"
    c.eval.at_init = False
    c.eval.every_epochs = 0  # no evaluation
    c.log_every_steps = 1
    c.checkpoint_every_steps = 10 ** 9
    return c
