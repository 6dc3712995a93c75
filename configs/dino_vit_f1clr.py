"""DINO ViT-S/16 with the paper's three strategies, as configs/simsiam_f1clr.py applies them to
SimSiam: 0.6 of the baseline's epochs (the paper's 480 of 800), F1-CLR with a fixed warm-up of
DINO's 10 epochs (eq. 8: half-cosine rise to the peak, cosine decay to 0) and AdamW's beta1
anti-phased between 0.95 and 0.85 (as fastai's one-cycle cycles Adam's momentum), Super
Progressive Learning (224 px during the warm-up, then 96 -> 224 px in 32 px buckets: multiples of
the 16 px patch), Hard Augment with 6 views scored at 64 px. Otherwise as
configs/dino_vit_baseline.py, whose 8 local crops of 96 px follow SP's resolution in whole
patches (48 px at 96 and 128, 64 at 160, 80 at 192: multicrop.local_resolution); Hard Augment
picks the two global views among its 6, and the student trains on them and the local crops.

The peak lr is the baseline's: the paper takes eps_max from an LR range test (SGD: 2x the
baseline's); for AdamW and ViTs none has been run yet, so run `configs/lr_range_test.py` with
this recipe's method and backbone before a long run.
"""
from configs import common


def get_config(arg=None):
    return common.vit_efficient(common.dino_vit_baseline())
