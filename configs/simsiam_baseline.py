"""SimSiam baseline on Imagenette (the paper's Sec. 4): ResNet-50, 224 px, batch 128, SGD momentum
0.9, weight decay 5e-4, cosine annealing from lr 0.1, 800 epochs; trained as SimSiam's code trains
it (`simsiam_code`).

  python launch.py --config configs/simsiam_baseline.py --config.dataset=imagenette \
      --config.data_dir=/path/to/imagenette2   # (folder with train/ and val/)

`shared_config()` is the part the paper uses for every method (Sec. 4.2: the same optimizer and
augmentation settings): the other methods' recipes and the ablation (configs/ablation.py, Table 3)
start from it, without SimSiam's code details.
"""
from effssl_jax.config_schema import default_config


def shared_config():
    """The paper's Imagenette baseline settings, common to every method's recipe."""
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


def simsiam_code(c):
    """What facebookresearch/simsiam's code does beyond the paper's hyper-parameters:
    - weight decay on every parameter, BN scales and biases included (main_simsiam.py gives
      torch.optim.SGD all of model.parameters() with one weight_decay);
    - zero-initialised last BN of each residual block (simsiam/builder.py:
      `base_encoder(num_classes=dim, zero_init_residual=True)`);
    - the predictor at the initial lr while the rest follows the cosine (`--fix-pred-lr`, in
      the README's pre-training command; main_simsiam.py adjust_learning_rate).
    """
    c.optim.decay_bn_and_bias = True
    c.model.zero_init_residual = True
    c.optim.fix_pred_lr = True
    return c


def get_config(arg=None):
    return simsiam_code(shared_config())
