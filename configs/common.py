"""The pieces several recipes share, each a function a recipe calls: the paper's Imagenette baseline
and efficient settings (every ResNet method's recipe: Sec. 4.2 uses the same optimiser and
augmentation hyper-parameters for every method), SimSiam's code details, DINO's ResNet multi-crop,
the ViT baselines and their efficient recipe, and Table 3's rows. Recipes import from here, never
from another recipe, so that a recipe reads whole beside this one file."""
from effssl_jax.config_schema import default_config


def imagenette_baseline(name: str, method: str):
    """The paper's Imagenette baseline (Sec. 4): ResNet-50, 224 px, batch 128, SGD momentum 0.9,
    weight decay 5e-4, cosine annealing from lr 0.1, 800 epochs, kNN every 10 epochs."""
    c = default_config()
    c.name, c.method = name, method
    c.dataset = "imagenette"
    c.model.arch = "resnet50"
    c.batch_size = 128
    c.epochs = 800
    c.optim.schedule = "cosine"
    c.optim.lr = 0.1
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.progressive.schedule = "fixed"
    c.progressive.r_max = 224
    c.eval.every_epochs = 10
    return c


def imagenette_efficient(c):
    """The paper's efficient recipe over imagenette_baseline: 480 epochs, F1-CLR (eps_max 0.2, t_w
    80 epochs, momentum 0.95 -> 0.85 -> 0.95), Super Progressive Learning 224 px during the
    warm-up then 96 -> 224 px in 32 px stages, Hard Augment with 6 views scored at 64 px."""
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


def simsiam_code(c):
    """What facebookresearch/simsiam's code does beyond the paper's hyper-parameters:
    - weight decay on every parameter, BN scales and biases included (main_simsiam.py gives
      torch.optim.SGD all of model.parameters() with one weight_decay);
    - zero-initialised last BN of each residual block (simsiam/builder.py:
      `base_encoder(num_classes=dim, zero_init_residual=True)`);
    - the predictor at the initial lr while the rest follows the cosine (`--fix-pred-lr`, in
      the README's pre-training command; main_simsiam.py adjust_learning_rate).
    """
    c.optim.decay_bn_and_bias = True
    c.model.zero_init_residual = True
    c.optim.fix_pred_lr = True
    return c


def dino_resnet_multi_crop(c):
    """DINO's multi-crop for a ResNet-50, facebookresearch/dino README.md:207 (commit 7c446df):
    `--global_crops_scale 0.14 1 --local_crops_scale 0.05 0.14` with main_dino.py's default 8
    local crops (:112) of 96 px (:452) beside 224 px global crops. The global scale is set here
    because DINO's recipe with local crops takes main_dino.py's default 0.4 - 1 (methods/dino.py
    official_views), which the README's ResNet command overrides."""
    c.augment.local_crops.update(count=8, resolution=96, scale=(0.05, 0.14))
    c.augment.crop_scale = (0.14, 1.0)
    return c


def dino_vit_baseline():
    """DINO ViT-S/16 on ImageNet as facebookresearch/dino trains it for 100 epochs
    (configs/dino_vit_baseline.py says where each value comes from)."""
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


def mocov3_vit_baseline():
    """MoCo v3 ViT-S/16 on ImageNet as facebookresearch/moco-v3 CONFIG.md trains it for 300
    epochs (configs/mocov3_vit_baseline.py says where each value comes from)."""
    c = default_config()
    c.name = "mocov3_vit_baseline"
    c.method = "mocov3"
    c.dataset = "imagenet2012"
    c.model.arch, c.model.patch_size = "vit_small", 16
    c.batch_size, c.epochs = 1024, 300
    c.optim.optimizer = "adamw"
    c.optim.schedule, c.optim.warmup_epochs = "warmup_cosine", 40
    c.optim.lr = 1.5e-4 * c.batch_size / 256
    c.optim.momentum, c.optim.beta2 = 0.9, 0.999
    c.optim.weight_decay, c.optim.decay_bn_and_bias = 0.1, True
    c.mocov3.update(proj_hidden=4096, proj_dim=256, pred_hidden=4096, temperature=0.2,
                    tau_base=0.99)
    c.progressive.schedule, c.progressive.r_max = "fixed", 224
    c.eval.every_epochs, c.eval.online_subset = 10, 10000  # as dino_vit_baseline
    return c


def vit_efficient(c):
    """A ViT baseline recipe `c` made efficient: 0.6 of its epochs, F1-CLR with the baseline's
    warm-up length as t_w, beta1 0.95 -> 0.85 -> 0.95, SP 96 -> 224 px, HA 6 views at 64 px."""
    c.name = c.name.replace("baseline", "f1clr")
    c.epochs = round(0.6 * c.epochs)
    c.optim.schedule = "f1clr"  # t_w: the baseline's optim.warmup_epochs
    c.optim.momentum_low, c.optim.momentum_high = 0.85, 0.95
    c.progressive.schedule = "super_progressive"
    c.progressive.r_min, c.progressive.r_max, c.progressive.bucket_step = 96, 224, 32
    c.hard_augment.enabled, c.hard_augment.num_views, c.hard_augment.r_sel = True, 6, 64
    return c


ABLATION_ROWS = ("ca", "f1clr", "ca+ha", "f1clr+sp", "f1clr+ha", "f1clr+sp+ha")


def parse_ablation_row(row: str) -> list[str]:
    """Table 3's row as its parts, e.g. ['f1clr', 'sp']; ValueError naming the valid rows."""
    if row.lower() not in ABLATION_ROWS:
        raise ValueError(f"unknown ablation row {row!r}; valid: {', '.join(ABLATION_ROWS)}")
    return row.lower().split("+")


def ablation_row(row: str):
    """Table 3's row: CA rows the baseline settings (cosine annealing, 800 epochs), F1-CLR rows
    the efficient ones (480 epochs, t_w 80), +sp with Super Progressive Learning, +ha with Hard
    Augment; SimSiam with the paper's augmentation setting, without SimSiam's code details
    (simsiam_code), which the paper does not name: the ablation's measured rows (results/) were
    trained so."""
    parts = parse_ablation_row(row)
    c = imagenette_baseline(f"ablation_{row.lower().replace('+', '_')}", "simsiam")
    if parts[0] == "f1clr":
        imagenette_efficient(c)
    c.augment.recipe = "paper"  # the paper's one augmentation setting (methods/recipes.py)
    if "sp" not in parts:
        c.progressive.schedule = "fixed"
    c.hard_augment.enabled = "ha" in parts
    return c
