"""SimSiam baseline on Imagenette (the paper's Sec. 4): ResNet-50, 224 px, batch 128, SGD momentum
0.9, weight decay 5e-4, cosine annealing from lr 0.1, 800 epochs.

  python launch.py --config configs/simsiam_baseline.py --config.dataset=imagenette \
      --config.data_dir=/path/to/imagenette2   # (folder with train/ and val/)
"""
from effssl_jax.config_schema import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "simsiam_baseline"
    c.method = "simsiam"
    c.dataset = "imagenette"
    c.model.arch = "resnet50"
    c.batch_size = 128
    c.epochs = 800
    c.optim.schedule = "cosine"
    c.optim.lr = 0.1
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.progressive.schedule = "fixed"
    c.progressive.r_max = 224
    c.eval.every_epochs = 10
    return c
