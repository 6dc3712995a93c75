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
from effssl_jax.config_schema import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "dino_vit_baseline"
    c.method = "dino"
    c.dataset = "imagenet2012"
    c.model.arch, c.model.patch_size = "vit_small", 16
    c.batch_size, c.epochs = 1024, 100
    c.optim.optimizer = "adamw"
    c.optim.schedule, c.optim.warmup_epochs = "warmup_cosine", 10
    c.optim.lr = 0.0005 * c.batch_size / 256
    c.optim.momentum, c.optim.beta2 = 0.9, 0.999
    c.optim.weight_decay, c.optim.weight_decay_end = 0.04, 0.4
    c.optim.clip_grad_norm = 3.0
    c.dino.update(proj_hidden=2048, bottleneck_dim=256, num_prototypes=65536,
                  norm_last_layer=True, student_temperature=0.1, teacher_temperature=0.04,
                  warmup_teacher_temperature=0.04, warmup_teacher_temperature_epochs=0,
                  center_momentum=0.9, tau_base=0.996, freeze_last_layer_epochs=1.0)
    # main_dino.py's --local_crops_number / --local_crops_scale defaults; the global crops' 0.4 - 1
    # follows from them (dino.official_views)
    c.augment.local_crops.update(count=8, resolution=96, scale=(0.05, 0.4))
    c.progressive.schedule, c.progressive.r_max = "fixed", 224
    # kNN during training on fixed 10000-image subsets of the train and validation splits (two
    # forwards of 10000 images an evaluation); the full evaluation is `python -m
    # effssl_jax.evaluate` (docs/evaluation.md).
    c.eval.every_epochs, c.eval.online_subset = 10, 10000
    return c
