"""MoCo v3 ViT-S/16 with the paper's three strategies (as configs/dino_vit_f1clr.py): 180 of the
baseline's 300 epochs, F1-CLR with a fixed warm-up of MoCo v3's 40 epochs and AdamW's beta1
anti-phased between 0.95 and 0.85, Super Progressive Learning 96 -> 224 px in 32 px buckets after
the warm-up, Hard Augment with 6 views scored at 64 px. Otherwise as configs/mocov3_vit_baseline.py;
the peak lr is the baseline's until an LR range test (configs/lr_range_test.py) picks eps_max.
"""
from configs import common


def get_config(arg=None):
    return common.vit_efficient(common.mocov3_vit_baseline())
