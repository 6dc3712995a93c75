"""MoCo v3 ViT-S/16 with the paper's three strategies (as configs/dino_vit_f1clr.py): 180 of the
baseline's 300 epochs, F1-CLR with a fixed warm-up of MoCo v3's 40 epochs and AdamW's beta1
anti-phased between 0.95 and 0.85, Super Progressive Learning 96 -> 224 px in 32 px buckets after
the warm-up, Hard Augment with 6 views scored at 64 px. Otherwise as configs/mocov3_vit_baseline.py;
the peak lr is the baseline's until an LR range test (configs/lr_range_test.py) picks eps_max.
"""
from configs import mocov3_vit_baseline


def get_config(arg=None):
    c = mocov3_vit_baseline.get_config()
    c.name = "mocov3_vit_f1clr"
    c.epochs = 180
    c.optim.schedule, c.optim.warmup_epochs = "f1clr", 40
    c.optim.momentum_low, c.optim.momentum_high = 0.85, 0.95
    c.progressive.schedule = "super_progressive"
    c.progressive.r_min, c.progressive.r_max, c.progressive.bucket_step = 96, 224, 32
    c.hard_augment.enabled, c.hard_augment.num_views, c.hard_augment.r_sel = True, 6, 64
    return c
