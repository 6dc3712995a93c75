"""Quickstart: SimSiam with a slim ResNet-18 on the embedded synthetic dataset, a few minutes on a
laptop CPU, offline. Shows kNN accuracy at initialisation and after training."""
from effssl_jax.config_schema import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "quickstart"
    c.method = "simsiam"
    c.dataset = "synthetic"
    c.synthetic_train_size = 4096
    c.synthetic_test_size = 1024
    c.model.arch = "resnet18"
    c.model.width = 32
    c.model.cifar_stem = True
    c.simsiam.proj_dim = 512
    c.simsiam.proj_layers = 2
    c.simsiam.pred_hidden = 128
    c.batch_size = 128
    c.epochs = 10
    c.optim.schedule = "cosine"
    c.optim.lr = 0.1
    c.optim.weight_decay = 5e-4
    c.progressive.r_max = 32
    c.eval.every_epochs = 5
    c.eval.crop_fraction = 1.0
    c.eval.knn_k = 20
    c.log_every_steps = 5
    c.checkpoint_every_steps = 100
    return c
