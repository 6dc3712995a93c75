"""Every configuration key with its default, and validation with one-line errors naming the fix.

Recipe files in `configs/` start from `default_config()` and change what the recipe needs; derived
numbers (steps per epoch, total and warm-up steps) are computed by `plan.py`, never stored here, so
an override such as `--config.batch_size=256` cannot leave them stale.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import os

import ml_collections

from effssl_jax import storage
from effssl_jax.augment import COLOUR_ROUNDINGS
from effssl_jax.data import datasets
from effssl_jax.errors import CheckpointError, ConfigError
from effssl_jax.hard_augment import PAIRINGS
from effssl_jax.methods import METHODS
from effssl_jax.methods.recipes import RECIPES
from effssl_jax.models import backbones
from effssl_jax.models.backbones import BACKBONES
from effssl_jax.models.cpu_conv import CONV_IMPLS

SCHEDULES = ("cosine", "warmup_cosine", "one_cycle", "f1clr", "constant", "exponential")
RESOLUTION_SCHEDULES = ("fixed", "progressive", "super_progressive")
DTYPES = ("auto", "float32", "bfloat16", "float64")
DATA_LOADERS = ("auto", "memory", "grain", "device")
ON_NONFINITE = ("stop", "skip")
WARMUP_SCHEDULES = ("f1clr", "warmup_cosine")  # the schedules that read optim.warmup_epochs
OPTIMIZERS = ("sgd", "adamw")  # optim.py
PREDICTOR_METHODS = ("simsiam", "byol", "mocov3")  # networks with a `predictor` (fix_pred_lr)


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "run"
    c.mode = "train"  # 'train' or 'lr_range_test'
    c.seed = 0
    c.method = "simsiam"

    # Data (data/datasets.py holds the table of named datasets: splits, classes).
    # dataset: 'synthetic' | 'imagenette' | 'imagenet2012' | 'stl10' | 'cifar10' (TFDS, prepared
    # in data_dir; imagenette also as an image folder with train/ and val/) | 'folder:PATH' (image
    # folder, or one packed by `python -m effssl_jax.data.prepare`) | 'tfds:NAME[/CONFIG]'.
    c.dataset = "synthetic"
    c.data_dir = ""
    # The shorter side (px) the host keeps training images at, whole (data/canvas.py); 0: per
    # bucket, enough that no view is upsampled where the file has the pixels (largest bucket's
    # when the split is held in memory).
    c.image_size = 0
    c.synthetic_train_size = 10000
    c.synthetic_test_size = 2000
    c.batch_size = 128  # global, across all devices and hosts
    c.epochs = 800
    c.prefetch = 2  # batches decoded ahead of the train step
    c.data = ml_collections.ConfigDict()
    # 'auto' (memory for synthetic, else grain) | 'memory' | 'grain' | 'device' (held on device)
    c.data.loader = "auto"
    c.data.threads = 0  # grain decode threads per host; 0: min(16, CPUs)
    c.data.processes = 0  # grain worker processes (mp_prefetch); 0: threads only
    # The canvas's side / the shorter side: images up to this aspect ratio are kept at the full
    # shorter side, more elongated ones are shrunk to fit (data/canvas.py, docs/data.md).
    c.data.canvas_aspect = 4 / 3

    c.viewers = ml_collections.ConfigDict()  # beside metrics.jsonl (viewers.py), process 0 only
    c.viewers.tensorboard = True  # event files in WORKDIR/tensorboard (tensorboardX)
    c.viewers.wandb = ""  # '' (off) | 'online' | 'offline' (Weights & Biases; pip install wandb)
    c.viewers.wandb_project = "effssl-jax"

    c.model = ml_collections.ConfigDict()
    c.model.arch = "resnet50"
    c.model.width = 64
    c.model.cifar_stem = False
    c.model.conv_impl = "auto"  # 'auto' | 'xla' | 'matmul' (im2col on CPU where XLA is slow)
    # ViTs (arch vit_tiny | vit_small | vit_base; width, cifar_stem and conv_impl are ResNets'):
    # the patch side, which every resolution of the run must be a multiple of, and the side the
    # position embedding is stored for (timm's img_size; 0: progressive.r_max), resampled to
    # every other resolution.
    c.model.patch_size = 16
    c.model.img_size = 0
    # ResNets: zero the scale of each residual block's last BN (bn2 / bn3) at init, so that every
    # block starts as the identity (torchvision's zero_init_residual; SimSiam's builder sets it).
    c.model.zero_init_residual = False
    c.dtype = "auto"  # 'auto': bfloat16 on GPU/TPU, float32 on CPU; 'float64': layout checks

    # Method hyper-parameters; each method reads its own sub-dict.
    c.simsiam = ml_collections.ConfigDict(dict(
        proj_dim=2048, proj_hidden=0, proj_layers=3, pred_hidden=512))
    c.byol = ml_collections.ConfigDict(dict(
        proj_hidden=4096, proj_dim=256, pred_hidden=4096, tau_base=0.99))
    c.simclr = ml_collections.ConfigDict(dict(proj_hidden=2048, proj_dim=256, temperature=0.2))
    c.mocov2plus = ml_collections.ConfigDict(dict(
        proj_hidden=2048, proj_dim=256, temperature=0.2, queue_size=4096, tau_base=0.99,
        final_tau=0.999))
    c.dino = ml_collections.ConfigDict(dict(
        proj_hidden=2048, bottleneck_dim=256, num_prototypes=4096, norm_last_layer=True,
        student_temperature=0.1, teacher_temperature=0.07, warmup_teacher_temperature=0.04,
        warmup_teacher_temperature_epochs=30, center_momentum=0.9, tau_base=0.9995,
        freeze_last_layer_epochs=1.0))
    c.mocov3 = ml_collections.ConfigDict(dict(  # its ViT recipe; sources in methods/mocov3.py
        proj_hidden=4096, proj_dim=256, pred_hidden=4096, temperature=0.2, tau_base=0.99))

    c.optim = ml_collections.ConfigDict()
    c.optim.schedule = "cosine"
    c.optim.lr = 0.1  # peak learning rate (eps_max)
    c.optim.momentum = 0.9  # used by schedules without a momentum cycle
    c.optim.momentum_low = 0.85  # beta_l of 1-CLR / F1-CLR
    c.optim.momentum_high = 0.95  # beta_h of 1-CLR / F1-CLR
    c.optim.warmup_epochs = 0.0  # t_w for warmup_cosine and f1clr
    c.optim.one_cycle_fraction = 0.3  # rho of 1-CLR
    c.optim.weight_decay = 5e-4
    c.optim.decay_bn_and_bias = False  # True: BN scales and biases decay too (SimSiam's code)
    # True: the predictor's parameters keep optim.lr (the schedule's peak) while the rest follow
    # the schedule (SimSiam's --fix-pred-lr); for methods with a predictor (simsiam, byol, mocov3)
    c.optim.fix_pred_lr = False
    c.optim.clip_grad_norm = 0.0  # > 0: clip the gradient's global norm (DINO's 3.0); 0: off
    # 'sgd' | 'adamw' (decoupled weight decay; beta1 is the schedule's momentum, so F1-CLR cycles
    # it between momentum_high and momentum_low as it does SGD's momentum)
    c.optim.optimizer = "sgd"
    c.optim.beta2 = 0.999  # AdamW's second-moment decay (torch.optim.AdamW's default)
    # >= 0: weight decay follows a cosine from weight_decay to this over training (DINO's ViT
    # recipe: 0.04 -> 0.4); negative: constant weight_decay
    c.optim.weight_decay_end = -1.0
    c.optim.lr_range = (1e-4, 10.0)  # lr_range_test mode: exponential from..to
    # A step whose loss, gradients or new state are not finite, or whose update is larger than
    # max_update_ratio x the weights (step.is_healthy): 'stop' the run (nothing after the last
    # checkpoint is kept), or 'skip' its update (as optax.apply_if_finite) and stop only after
    # max_skipped_in_a_row of them in a row.
    c.optim.on_nonfinite = "stop"
    c.optim.max_skipped_in_a_row = 10
    c.optim.max_update_ratio = 100.0

    c.progressive = ml_collections.ConfigDict()
    c.progressive.schedule = "fixed"
    c.progressive.r_max = 224
    c.progressive.r_min = 96
    c.progressive.bucket_step = 32
    c.progressive.magnitude_min = 2.0
    c.progressive.magnitude_max = 5.0  # 5 = the standard SimCLR colour jitter strength

    c.augment = ml_collections.ConfigDict()
    # 'method': each method's own recipe (its official repository's, methods/<method>.py) |
    # 'paper': the paper's one setting for every method (SimSiam's; methods/recipes.py)
    c.augment.recipe = "method"
    # Overrides of the recipe on both views: the crop's (min, max) area scale, () for the
    # recipe's; the blur probability, -1 for the recipe's (BYOL, DINO, MoCo v3: 1.0 on the first
    # view and 0.1 on the second).
    c.augment.crop_scale = ()
    c.augment.blur_prob = -1.0
    # How the views' pixels are kept between ops: 'float' (torchvision's formulas on float
    # tensors) | 'uint8' (rounded to 8 bits after the crop and each colour op, as torchvision
    # computes on uint8 tensors and PIL on images; augment.COLOUR_ROUNDINGS, docs/paper_notes.md).
    c.augment.colour_rounding = "float"
    # Multi-crop (multicrop.py): `count` low-resolution local crops of each image beside the two
    # global views (0: off; DINO: 8), `resolution` px at progressive.r_max (DINO: 96 at 224; under
    # Super Progressive Learning scaled with the step's resolution), crop area `scale` (DINO's
    # local_crops_scale). DINO trains its student on them; the pair-loss methods use them as
    # extra targets (Table 9's multi-crop row).
    c.augment.local_crops = ml_collections.ConfigDict(dict(count=0, resolution=96,
                                                           scale=(0.05, 0.4)))

    c.hard_augment = ml_collections.ConfigDict()
    c.hard_augment.enabled = False
    c.hard_augment.num_views = 6
    # Side (px) the views are scored at, capped at the step's resolution; 0: the rule in
    # hard_augment.selection_side, 64/224 of the step's resolution floored at 1.5 output strides
    # of the backbone (64 px at 224 on a ResNet; results/ha_selection_* measured it).
    c.hard_augment.r_sel = 0
    c.hard_augment.extra_targets = False  # Table 9 variant: unselected views as extra targets
    # Candidate pairs (hard_augment.cross_pairs): 'all' C(n, 2); 'cross' one view of each of the
    # method's two recipes; 'auto' cross when the two recipes differ (BYOL, DINO, MoCo v3).
    c.hard_augment.pairs = "auto"

    c.eval = ml_collections.ConfigDict()
    c.eval.every_epochs = 10.0  # and at the end of training; 0: no kNN evaluation
    c.eval.knn_k = 200
    c.eval.knn_temperature = 0.1
    c.eval.resolution = 0  # 0: r_max
    c.eval.batch_size = 256
    # Evaluation crops: the shorter side resized to eval.resolution / crop_fraction, then the
    # central eval.resolution square (torchvision's Resize(256) + CenterCrop(224) at 0.875).
    c.eval.crop_fraction = 0.875
    c.eval.at_init = True
    # Images of each split (bank, queries) the online kNN holds and evaluates: a fixed random
    # subset of that size (0: the whole splits). Each online evaluation costs one forward of each.
    c.eval.online_subset = 0

    c.log_every_steps = 10
    c.checkpoint_every_steps = 500
    c.checkpoint_every_minutes = 0.0  # also save when this much time has passed; 0: off
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.compare_to = ""  # a baseline run's workdir: summary.json gets speedup_vs
    return c


def _fail(msg: str):
    raise ConfigError(msg)


def validate(c: ml_collections.ConfigDict, num_devices: int = 1) -> None:
    """Raise ConfigError for the first value that cannot work."""
    if c.batch_size <= 0:
        _fail(f"batch_size={c.batch_size} must be positive")
    if c.batch_size % num_devices:
        _fail(f"batch_size={c.batch_size} is not divisible by the {num_devices} devices; "
              f"set --config.batch_size to a multiple of {num_devices}")
    d = c.data
    if d.loader not in DATA_LOADERS:
        _fail(f"data.loader={d.loader!r} is unknown; valid: {', '.join(DATA_LOADERS)}")
    if d.threads < 0 or d.processes < 0:
        _fail("data.threads and data.processes must be >= 0 (0: default)")
    if d.canvas_aspect < 1:
        _fail(f"data.canvas_aspect={d.canvas_aspect} must be >= 1 (the canvas holds at least a "
              "square image at the shorter side)")
    if c.image_size < 0:
        _fail(f"image_size={c.image_size} must be >= 0 (0: automatic)")
    datasets.parse(c.dataset)  # raises DataError for unknown names
    if c.method not in METHODS:
        _fail(f"method={c.method!r} is unknown; valid: {', '.join(METHODS)}")
    if c.model.arch not in BACKBONES:
        _fail(f"model.arch={c.model.arch!r} is unknown; valid: {', '.join(BACKBONES)}")
    if c.model.conv_impl not in CONV_IMPLS:
        _fail(f"model.conv_impl={c.model.conv_impl!r} is unknown; valid: {', '.join(CONV_IMPLS)}")
    if c.model.zero_init_residual and backbones.is_vit(c.model.arch):
        _fail(f"model.zero_init_residual=True zeroes ResNet blocks' last BN; model.arch="
              f"{c.model.arch!r} has none: set --config.model.zero_init_residual=False")
    if c.method == "mocov2plus" and c.mocov2plus.queue_size < c.batch_size:
        _fail(f"mocov2plus.queue_size={c.mocov2plus.queue_size} must be >= batch_size="
              f"{c.batch_size} (each step enqueues the whole batch)")
    if c.epochs <= 0:
        _fail(f"epochs={c.epochs} must be positive")
    if c.optim.schedule not in SCHEDULES:
        _fail(f"optim.schedule={c.optim.schedule!r} is unknown; valid: {', '.join(SCHEDULES)}")
    if c.optim.schedule in WARMUP_SCHEDULES and not 0 <= c.optim.warmup_epochs < c.epochs:
        _fail(f"optim.warmup_epochs={c.optim.warmup_epochs} must lie in [0, epochs={c.epochs})")
    if c.optim.schedule == "one_cycle" and not 0 < c.optim.one_cycle_fraction < 1:
        _fail(f"optim.one_cycle_fraction={c.optim.one_cycle_fraction} must lie in (0, 1) (the "
              "fraction of training spent rising; 1-CLR uses 0.3)")
    if c.optim.warmup_epochs and c.optim.schedule not in WARMUP_SCHEDULES:
        _fail(f"optim.warmup_epochs={c.optim.warmup_epochs} is ignored by optim.schedule="
              f"{c.optim.schedule!r}; only {' and '.join(WARMUP_SCHEDULES)} warm up: set "
              "--config.optim.warmup_epochs=0 or one of those schedules")
    if not 0 <= c.optim.momentum_low <= c.optim.momentum_high < 1:
        _fail("need 0 <= optim.momentum_low <= optim.momentum_high < 1")
    if c.optim.clip_grad_norm < 0:
        _fail(f"optim.clip_grad_norm={c.optim.clip_grad_norm} must be >= 0 (0: no clipping)")
    if c.optim.optimizer not in OPTIMIZERS:
        _fail(f"optim.optimizer={c.optim.optimizer!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if c.optim.optimizer == "adamw" and not (0 <= c.optim.momentum < 1 and 0 <= c.optim.beta2 < 1):
        _fail(f"optim.momentum={c.optim.momentum} (AdamW's beta1) and optim.beta2="
              f"{c.optim.beta2} must lie in [0, 1)")
    if c.optim.weight_decay < 0:
        _fail(f"optim.weight_decay={c.optim.weight_decay} must be >= 0")
    if c.optim.fix_pred_lr and c.method not in PREDICTOR_METHODS:
        _fail(f"optim.fix_pred_lr=True fixes the predictor's lr but method={c.method!r} has no "
              f"predictor (only {', '.join(PREDICTOR_METHODS)}); set --config.optim.fix_pred_lr="
              "False")
    if c.optim.fix_pred_lr and c.optim.schedule == "exponential":
        _fail("optim.fix_pred_lr=True holds the predictor at optim.lr, the value the LR range test "
              "(optim.schedule=exponential) searches for; set --config.optim.fix_pred_lr=False")
    if c.method == "mocov3" and not (c.mocov3.temperature > 0 and 0 <= c.mocov3.tau_base <= 1):
        _fail(f"mocov3.temperature={c.mocov3.temperature} must be positive and mocov3.tau_base="
              f"{c.mocov3.tau_base} in [0, 1]")
    if c.optim.on_nonfinite not in ON_NONFINITE:
        _fail(f"optim.on_nonfinite={c.optim.on_nonfinite!r} is unknown; valid: "
              f"{', '.join(ON_NONFINITE)}")
    if c.optim.max_skipped_in_a_row < 1:
        _fail(f"optim.max_skipped_in_a_row={c.optim.max_skipped_in_a_row} must be >= 1")
    if c.optim.max_update_ratio <= 0:
        _fail(f"optim.max_update_ratio={c.optim.max_update_ratio} must be positive")
    if c.checkpoint_every_minutes < 0:
        _fail(f"checkpoint_every_minutes={c.checkpoint_every_minutes} must be >= 0 (0: off)")
    if c.optim.lr <= 0:
        _fail(f"optim.lr={c.optim.lr} must be positive")
    p = c.progressive
    if p.schedule not in RESOLUTION_SCHEDULES:
        _fail(f"progressive.schedule={p.schedule!r} is unknown; "
              f"valid: {', '.join(RESOLUTION_SCHEDULES)}")
    if p.schedule != "fixed":
        if not 0 < p.r_min <= p.r_max:
            _fail(f"progressive.r_min={p.r_min} must be in (0, r_max={p.r_max}]")
        if p.bucket_step <= 0 or p.r_min % p.bucket_step or p.r_max % p.bucket_step:
            _fail(f"progressive.r_min={p.r_min} and r_max={p.r_max} must be multiples of "
                  f"progressive.bucket_step={p.bucket_step}; set a common divisor (e.g. 8)")
    if p.r_max <= 0:
        _fail(f"progressive.r_max={p.r_max} must be positive")
    _check_augment(c.augment)
    _check_local_crops(c.augment.local_crops, p.r_max)
    h = c.hard_augment
    if h.enabled and h.num_views < 2:
        _fail(f"hard_augment.num_views={h.num_views} must be >= 2")
    if h.enabled and h.r_sel < 0:
        _fail(f"hard_augment.r_sel={h.r_sel} must be >= 0 (0: the rule of "
              "hard_augment.selection_side; else a side in px)")
    if h.pairs not in PAIRINGS:
        _fail(f"hard_augment.pairs={h.pairs!r} is unknown; valid: {', '.join(PAIRINGS)}")
    _check_resolution_multiples(c)
    if c.dtype not in DTYPES:
        _fail(f"dtype={c.dtype!r} is unknown; valid: {', '.join(DTYPES)}")
    if c.mode not in ("train", "lr_range_test"):
        _fail(f"mode={c.mode!r} is unknown; valid: train, lr_range_test")
    if c.eval.every_epochs < 0:
        _fail(f"eval.every_epochs={c.eval.every_epochs} must be >= 0 (0 turns the kNN "
              "evaluation off)")
    if not 0 < c.eval.crop_fraction <= 1:
        _fail(f"eval.crop_fraction={c.eval.crop_fraction} must lie in (0, 1] (0.875: resize to "
              "256 and centre-crop 224; 1: resize the shorter side to the resolution)")
    if c.eval.knn_k <= 0 or c.eval.knn_temperature <= 0:
        _fail("eval.knn_k and eval.knn_temperature must be positive")
    if c.viewers.wandb not in ("", "online", "offline"):
        _fail(f"viewers.wandb={c.viewers.wandb!r} is unknown; valid: '' (off), online, offline")
    if c.eval.online_subset < 0:
        _fail(f"eval.online_subset={c.eval.online_subset} must be >= 0 (0: the whole splits)")
    for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if c[key] < 1:
            _fail(f"{key}={c[key]} must be >= 1; set --config.{key} to a positive number of "
                  + ("checkpoints to keep" if key == "keep_checkpoints" else "steps"))


def _check_augment(a) -> None:
    """config.augment: a known recipe and colour rounding, and overrides that are placeholders
    or valid values."""
    if a.recipe not in RECIPES:
        _fail(f"augment.recipe={a.recipe!r} is unknown; valid: {', '.join(RECIPES)} (the "
              "method's own recipe or the paper's setting)")
    scale = tuple(a.crop_scale)
    if scale and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        _fail(f"augment.crop_scale={scale} must be (min, max) with 0 < min <= max <= 1, or () "
              "for the recipe's; set e.g. --config.augment.crop_scale='(0.08, 1.0)'")
    if a.blur_prob != -1 and not 0 <= a.blur_prob <= 1:
        _fail(f"augment.blur_prob={a.blur_prob} must lie in [0, 1], or be -1 for the recipe's")
    if a.colour_rounding not in COLOUR_ROUNDINGS:
        _fail(f"augment.colour_rounding={a.colour_rounding!r} is unknown; set "
              f"--config.augment.colour_rounding to one of: {', '.join(COLOUR_ROUNDINGS)}")


def _check_local_crops(local, r_max: int) -> None:
    """config.augment.local_crops: a count >= 0 and, when on, a side within (0, r_max] and a
    valid crop scale range."""
    if not isinstance(local.count, int) or local.count < 0:
        _fail(f"augment.local_crops.count={local.count} must be an integer >= 0 (0: no local "
              "crops; DINO's recipe: 8); set --config.augment.local_crops.count")
    if local.count == 0:
        return
    if not 0 < local.resolution <= r_max:
        _fail(f"augment.local_crops.resolution={local.resolution} must lie in (0, "
              f"progressive.r_max={r_max}] (local crops are the low-resolution views: DINO's are "
              "96 px at 224); set --config.augment.local_crops.resolution")
    scale = tuple(local.scale)
    if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        _fail(f"augment.local_crops.scale={scale} must be (min, max) with 0 < min <= max <= 1; "
              "set e.g. --config.augment.local_crops.scale='(0.05, 0.4)' (DINO's)")


def _check_resolution_multiples(c) -> None:
    """The backbone's constraint on input sides (backbones.resolution_multiple): for a ViT every
    resolution the run uses, the buckets' steps, Hard Augment's r_sel and the evaluation's, must
    be a multiple of model.patch_size. ResNets take any side (their rule is bucket_step's)."""
    if backbones.is_vit(c.model.arch) and c.model.patch_size <= 0:
        _fail(f"model.patch_size={c.model.patch_size} must be positive (ViTs: e.g. 16)")
    if c.model.img_size < 0:
        _fail(f"model.img_size={c.model.img_size} must be >= 0 (0: progressive.r_max)")
    multiple = backbones.resolution_multiple(c.model)
    if multiple == 1:
        return
    p = c.progressive
    keys = {"progressive.r_max": p.r_max, "model.img_size": c.model.img_size,
            "eval.resolution": c.eval.resolution}  # 0 (automatic) is a multiple
    if p.schedule != "fixed":
        keys.update({"progressive.r_min": p.r_min, "progressive.bucket_step": p.bucket_step})
    if c.hard_augment.enabled:
        keys["hard_augment.r_sel"] = c.hard_augment.r_sel  # 0 (the rule) is a multiple
    if c.augment.local_crops.count > 0:
        keys["augment.local_crops.resolution"] = c.augment.local_crops.resolution
    for key, value in keys.items():
        if value % multiple:
            below, above = value // multiple * multiple, (value // multiple + 1) * multiple
            fix = f"{below} or {above}" if below else f"{above}"
            _fail(f"{key}={value} is not a multiple of model.patch_size={multiple} "
                  f"({c.model.arch} tiles its input into {multiple} px patches); set "
                  f"--config.{key}={fix}, or another multiple of {multiple}")


# What a resumed run may not change: these set the state's shapes or the data order, so the
# checkpoint and the examples already seen would belong to another run. fnmatch patterns over
# dotted keys; {method} is the run's method. Everything else (the lr and its schedule, epochs,
# evaluation, logging, checkpoint cadences, augmentation, resolution plan) may change.
RESUME_FIXED = ("method", "seed", "batch_size", "dataset", "synthetic_train_size", "model.*",
                "{method}.proj_*", "{method}.pred_hidden", "{method}.queue_size",
                "{method}.bottleneck_dim", "{method}.num_prototypes", "{method}.norm_last_layer",
                "optim.optimizer")


def _flat(config: ml_collections.ConfigDict) -> dict:
    """{'optim.lr': 0.1, ...} with JSON values (tuples as lists), as config.json holds them."""
    def walk(d, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    return dict(walk(json.loads(config.to_json_best_effort())))


def resume_changes(workdir: str, config: ml_collections.ConfigDict) -> dict:
    """{key: (saved value, new value)} for the keys in which `config` differs from the run saved in
    WORKDIR/config.json ({} if there is none). Raises ConfigError naming the keys that a resumed
    run may not change (RESUME_FIXED, and turning gradient clipping on or off, which changes the
    optimizer state)."""
    if not storage.exists(storage.join(workdir, "config.json")):
        return {}
    old, new = _flat(from_workdir(workdir)), _flat(config)
    changes = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
    fixed = [p.format(method=config.method) for p in RESUME_FIXED]
    refused = [k for k in changes if any(fnmatch.fnmatchcase(k, p) for p in fixed)]
    if "optim.clip_grad_norm" in changes and (changes["optim.clip_grad_norm"][0] > 0) != (
            config.optim.clip_grad_norm > 0):
        refused.append("optim.clip_grad_norm")
    if (backbones.is_vit(config.model.arch) and not config.model.img_size
            and "progressive.r_max" in changes):  # it sets the position embedding's shape
        refused.append("progressive.r_max")
    if refused:
        _fail(f"{workdir} holds a run whose {', '.join(f'{k}={changes[k][0]!r}' for k in refused)}"
              f" cannot change on resume (they set the state's shapes or the data order; asked: "
              f"{', '.join(f'{k}={changes[k][1]!r}' for k in refused)}); use a new --workdir")
    return changes


def from_recipe(path_and_arg: str) -> ml_collections.ConfigDict:
    """'configs/x.py[:arg]' -> the config, as launch.py's --config builds it."""
    path, _, arg = path_and_arg.partition(":")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def from_workdir(workdir: str) -> ml_collections.ConfigDict:
    """A run's resolved config (WORKDIR/config.json) over today's defaults."""
    path = storage.join(workdir, "config.json")
    try:
        saved = json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; --workdir must name a run's directory") from None
    config = default_config()
    config.update(saved)
    return config
