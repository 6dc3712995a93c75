"""DINO with a ViT-S/16 on ImageNet, as the DINO repository trains it for 100 epochs
(facebookresearch/dino main_dino.py defaults and README; Caron et al., ICCV 2021):

- AdamW (torch defaults: betas 0.9, 0.999), lr 0.0005 x batch / 256 (batch 1024: 0.002), linear
  warm-up for 10 epochs, then cosine (to 0 here; DINO's min_lr is 1e-6); weight decay cosine from
  0.04 to 0.4, on kernels only (DINO also decays the position embedding and class token);
  gradient clipping at norm 3.0;
- DINO head: 2048 hidden, 256 bottleneck, 65536 prototypes, last layer weight-normalised with its
  norm fixed and frozen for the first epoch; teacher temperature 0.04, student 0.1; teacher EMA
  0.996 -> 1 (cosine); centre momentum 0.9;
- multi-crop as main_dino.py's defaults: 2 global crops of 224 px and scale 0.4 - 1 (:108;
  DINO's recipe, methods/dino.py, takes that scale when local crops are on) and 8 local crops
  (:112) of 96 px (:452) and scale 0.05 - 0.4 (:115); otherwise DINO's augmentation recipe
  (methods/dino.py, its local crops' transform included).

What this library does not do: stochastic depth (drop_path 0.1), fp16 loss scaling (bfloat16
needs none).

    python launch.py --config configs/dino_vit_baseline.py --config.data_dir=/path/to/tfds
"""
from configs import common


def get_config(arg=None):
    return common.dino_vit_baseline()
