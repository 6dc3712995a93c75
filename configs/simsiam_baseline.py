"""SimSiam baseline on Imagenette (the paper's Sec. 4): ResNet-50, 224 px, batch 128, SGD momentum
0.9, weight decay 5e-4, cosine annealing from lr 0.1, 800 epochs (common.imagenette_baseline, the
settings the paper uses for every method, Sec. 4.2); trained as SimSiam's code trains it
(common.simsiam_code: weight decay on every parameter, zero-initialised residual BNs, the
predictor's lr fixed).

  python launch.py --config configs/simsiam_baseline.py --config.dataset=imagenette \
      --config.data_dir=/path/to/imagenette2   # (folder with train/ and val/)
"""
from configs import common


def get_config(arg=None):
    return common.simsiam_code(common.imagenette_baseline("simsiam_baseline", "simsiam"))
