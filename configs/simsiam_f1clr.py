"""SimSiam with the paper's efficient Imagenette recipe (Sec. 4; common.imagenette_efficient):
F1-CLR (eps_max 0.2, t_w 80 epochs, momentum 0.95 -> 0.85 -> 0.95), 480 epochs, Super Progressive
Learning 224 px during the warm-up then 96 -> 224 px in 32 px stages (6 stages), Hard Augment with
6 views scored at 64 px. Otherwise the baseline's settings (common.imagenette_baseline: ResNet-50,
batch 128, weight decay 5e-4) and SimSiam's code details (common.simsiam_code: weight decay on
every parameter, zero-initialised residual BNs, the predictor's lr fixed at eps_max)."""
from configs import common


def get_config(arg=None):
    c = common.imagenette_efficient(common.imagenette_baseline("simsiam_f1clr", "simsiam"))
    return common.simsiam_code(c)
