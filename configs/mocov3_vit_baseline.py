"""MoCo v3 with a ViT-S/16 on ImageNet, as facebookresearch/moco-v3 CONFIG.md trains it
(Chen, Xie, He, ICCV 2021): 300 epochs, AdamW (betas 0.9, 0.999), lr 1.5e-4 x batch / 256
(`--lr=1.5e-4`, batch 1024 here: 6e-4; CONFIG.md's ViT-S runs use 1024 - 4096), linear warm-up for
40 epochs then cosine, weight decay 0.1 on every parameter (main_moco.py passes all of them to
AdamW), temperature 0.2, momentum encoder 0.99 -> 1 (cosine), projector 3 layers and predictor 2
of 4096 hidden, 256 out (config.mocov3; methods/mocov3.py), MoCo v3's augmentation recipe
(BYOL's: crop scale 0.08 - 1, asymmetric blur and solarisation; methods/mocov3.py).

What this library does not do: the frozen random patch projection (`--stop-grad-conv1`), which
MoCo v3 reports stabilises ViT training.

    python launch.py --config configs/mocov3_vit_baseline.py --config.data_dir=/path/to/tfds
"""
from configs import common


def get_config(arg=None):
    return common.mocov3_vit_baseline()
