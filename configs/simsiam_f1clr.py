"""SimSiam with the paper's efficient Imagenette recipe (Sec. 4): F1-CLR (eps_max 0.2, t_w 80
epochs, momentum 0.95 -> 0.85 -> 0.95), 480 epochs, Super Progressive Learning 224 px during the
warm-up then 96 -> 224 px in 32 px stages (6 stages), Hard Augment with 6 views scored at 64 px.
Otherwise as configs/simsiam_baseline.py (ResNet-50, batch 128, weight decay 5e-4, SimSiam's code
details: weight decay on every parameter, zero-initialised residual BNs, the predictor's lr fixed
at eps_max). `shared_config()` is the part every method's efficient recipe starts from."""
from configs import simsiam_baseline


def shared_config():
    """The paper's efficient settings over simsiam_baseline.shared_config()."""
    c = simsiam_baseline.shared_config()
    c.name = "simsiam_f1clr"
    c.epochs = 480
    c.optim.schedule = "f1clr"
    c.optim.lr = 0.2
    c.optim.warmup_epochs = 80
    c.optim.momentum_low, c.optim.momentum_high = 0.85, 0.95
    c.progressive.schedule = "super_progressive"
    c.progressive.r_min, c.progressive.r_max, c.progressive.bucket_step = 96, 224, 32
    c.hard_augment.enabled = True
    c.hard_augment.num_views = 6
    c.hard_augment.r_sel = 64
    return c


def get_config(arg=None):
    return simsiam_baseline.simsiam_code(shared_config())
