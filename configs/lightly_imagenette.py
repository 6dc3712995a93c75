"""SimCLR on Imagenette in lightly's published benchmark setting, for an accelerator:
--config configs/lightly_imagenette.py:ROW[,EPOCHS] with ROW
- cosine: lightly's recipe, 200 epochs (EPOCHS, default 200);
- efficient: F1-CLR + Super Progressive + Hard Augment, 0.6 x EPOCHS (120), warm-up 0.1 x EPOCHS.

lightly's setting (benchmarks/imagenette, imagenette_benchmark.py, results of 4.5.2023: SimCLR kNN
top-1 0.835 after 200 epochs, 49.7 min on one A6000): torchvision ResNet-18, 128 px, batch 256,
projection head 512 -> 512 -> 128, NT-Xent temperature 0.5, SGD lr 0.06 x batch/256, momentum 0.9,
weight decay 5e-4, cosine annealing, weighted kNN k=200, T=0.1 on the train split as the bank and
the val split resized to 128 px and centre-cropped. The views follow SimCLR's own augmentation
recipe (methods/simclr.py).

The efficient row keeps the paper's ratios (Sec. 4): eps_max twice the cosine lr (paper 0.1 ->
0.2), momentum 0.95 -> 0.85 -> 0.95, Super Progressive from 3/7 of r_max (paper 96 of 224) in 32
px buckets (64, 96, 128), Hard Augment's 6 views scored at the default side
(hard_augment.selection_side: 48 px in every bucket, 1.5 output strides; the paper's fraction,
37 px at 128, and the 32 px used before leave a one-cell last map, where
results/ha_selection_r50_224 measured the choice weak). benchmarks/device_check.sh runs this
row as its Hard Augment case.

The split is held in device memory (`data.loader=device`), so the host does no work per step.
The data is the shared Imagenette at 160 px (`data_dir`).
"""
from configs import common

ROWS = ("cosine", "efficient")
DATA_DIR = "../shared/data/imagenette2-160"


def get_config(arg="cosine"):
    row, epochs = ((arg or "cosine").split(",") + [""])[:2]
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; valid: {', '.join(ROWS)}")
    base_epochs = int(epochs or 200)
    c = common.imagenette_baseline(f"lightly_imagenette_{row}", "simclr")
    c.simclr.proj_hidden, c.simclr.proj_dim, c.simclr.temperature = 512, 128, 0.5
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet18", 64, False
    c.dataset, c.data_dir, c.data.loader = "imagenette", DATA_DIR, "device"
    c.batch_size = 256
    c.optim.lr, c.optim.momentum, c.optim.weight_decay = 0.06 * c.batch_size / 256, 0.9, 5e-4
    c.progressive.r_max = 128
    c.eval.crop_fraction = 1.0  # lightly: resize the shorter side to 128, centre crop 128
    c.epochs = base_epochs
    if row == "efficient":
        c.epochs = round(0.6 * base_epochs)
        c.optim.schedule, c.optim.lr = "f1clr", 2 * c.optim.lr
        c.optim.warmup_epochs = 0.1 * base_epochs
        c.optim.momentum_low, c.optim.momentum_high = 0.85, 0.95
        c.progressive.schedule = "super_progressive"
        c.progressive.r_min, c.progressive.bucket_step = 64, 32
        c.hard_augment.enabled, c.hard_augment.num_views = True, 6
    c.eval.every_epochs = c.epochs / 4
    c.checkpoint_every_minutes = 5
    return c
