"""DINO (Caron et al., ICCV 2021) with a ResNet backbone: the student matches the centred,
sharpened softmax of an EMA teacher over `num_prototypes` outputs, on the two global views and,
with `augment.local_crops` (multicrop.py), on DINO's low-resolution local crops too
(`multicrop_loss`: DINOLoss over 2 global + N local crops).

Hyper-parameters (config.dino), from the DINO repository (main_dino.py / DINOHead) unless noted:
head = 3-layer MLP (2048 hidden, GELU, no BN: `use_bn_in_head` defaults to False, also in
solo-learn) to a 256-d bottleneck, L2-normalised, then a weight-normalised bias-free linear layer
whose norm g is fixed to 1 when `norm_last_layer`; num_prototypes 4096 (solo-learn ImageNet-100;
DINO uses 65536 on ImageNet); student temperature 0.1; teacher temperature warmed linearly from
0.04 to 0.07 over 30 epochs (DINO paper, implementation details; solo-learn's ImageNet-100
config uses 50); centre momentum 0.9; teacher EMA tau cosine-increased from 0.9995 to 1 (DINO
recommends 0.9995 for small batches, as in solo-learn's ImageNet-100 config; its default 0.996
is for batch 1024); the last layer frozen for the first `freeze_last_layer_epochs` (1, DINO and
solo-learn). Gradient clipping (DINO: 3.0, solo-learn's ResNet configs: off) is the optimiser's
`optim.clip_grad_norm`.

Views: DINO's two global crops, at the crop scale DINO uses with local crops or the wider one it
advises without them (`official_views`), and its local crops' transform (`local_view`), with
their sources.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp

from effssl_jax import schedules
from effssl_jax.augment import ViewConfig
from effssl_jax.methods.base import MethodContext, MethodDefaults, l2_normalize
from effssl_jax.methods.byol import asymmetric_views
from effssl_jax.models.dtypes import at_least_float32
from effssl_jax.models.heads import SSLNet, torch_linear_init


class WeightNormDense(nn.Module):
    """Bias-free linear layer with weight norm per output unit: W[:, j] = g_j v[:, j] / |v[:, j]|
    (torch.nn.utils.weight_norm of a Linear); g is fixed to 1 (no parameter) if `fixed_norm`.
    v is called `kernel` so that it gets weight decay, as in DINO (g, 1-D, does not)."""
    features: int
    fixed_norm: bool = True

    @nn.compact
    def __call__(self, x):
        v = self.param("kernel", torch_linear_init(), (x.shape[-1], self.features), jnp.float32)
        w = v / jnp.linalg.norm(v, axis=0, keepdims=True)
        if not self.fixed_norm:
            w = w * self.param("scale", nn.initializers.ones, (self.features,), jnp.float32)
        return x @ w


class DINOHead(nn.Module):
    """MLP -> L2-normalise -> weight-normalised linear layer (DINO's `DINOHead`)."""
    num_prototypes: int
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        # DINO's init: trunc_normal(std=0.02) truncated at +-2 (100 std: a plain normal), zero bias.
        dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=nn.initializers.normal(0.02))
        for _ in range(self.num_layers - 1):
            x = dense(self.hidden_dim)(x)
            if self.use_bn:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype)(x)
            x = nn.gelu(x, approximate=False)  # torch.nn.GELU
        x = l2_normalize(at_least_float32(dense(self.bottleneck_dim)(x)))
        return WeightNormDense(self.num_prototypes, self.norm_last_layer, name="last_layer")(x)


def official_views(local_crops: bool = False) -> tuple[ViewConfig, ViewConfig]:
    """DINO's two global crops, facebookresearch/dino main_dino.py:419-448 (commit 7c446df,
    DataAugmentationDINO): flip p 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) at p 0.8, grayscale
    p 0.2, then blur with sigma in [0.1, 2] (utils.py:36-54) at p 1.0 / 0.1 and solarisation
    (utils.py:57-68, PIL's at 128) at p 0 / 0.2: BYOL's asymmetric pair (byol.asymmetric_views).

    Crop scale: with `local_crops` (augment.local_crops.count > 0) the default
    global_crops_scale (0.4, 1) (main_dino.py:108), which goes with the local crops; without
    them (0.14, 1), as main_dino.py:110-114 recommends ("--global_crops_scale 0.14 1.") when
    multi-crop is disabled (`--local_crops_number 0`). (The README's ResNet-50 command,
    README.md:207, keeps 0.14 - 1 with local crops of 0.05 - 0.14: configs/dino_baseline.py.)"""
    return asymmetric_views(ViewConfig(
        crop_scale=(0.4, 1.0) if local_crops else (0.14, 1.0), crop_ratio=(3 / 4, 4 / 3),
        flip_prob=0.5, jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
        gray_prob=0.2, blur_sigma=(0.1, 2.0)))


# The side of DINO's local crops beside 224 px global crops (main_dino.py:452).
LOCAL_SIDE, GLOBAL_SIDE = 96, 224


def local_view(global_view: ViewConfig, scale) -> ViewConfig:
    """DINO's local crops' transform, main_dino.py:449-456 (7c446df, `local_transfo`): the global
    crops' flip, colour jitter and grayscale (`flip_and_color_jitter`, :421-428), then blur at
    p 0.5 (utils.GaussianBlur(p=0.5)), no solarisation, crop area `scale` (local_crops_scale,
    :115, default (0.05, 0.4)). Derived from the first global view, so that it shares that view's
    colour settings and any override of them.

    DINO's blur radius, 0.1 - 2 px, is in pixels of whatever image it blurs: of the 96 px local
    crop. ViewConfig.blur_sigma is in pixels of a 224 px view, scaled with the view's side, so it
    is stretched by 224 / 96 here: a local crop rendered at 96 px is blurred by 0.1 - 2 px, as in
    DINO, and under Super Progressive Learning by the same fraction of its side."""
    stretch = GLOBAL_SIDE / LOCAL_SIDE
    return dataclasses.replace(global_view, crop_scale=tuple(float(s) for s in scale),
                               blur_prob=0.5,
                               blur_sigma=tuple(s * stretch for s in global_view.blur_sigma),
                               solarize_prob=0.0)


def teacher_temperature_schedule(warmup: float, final: float, warmup_steps: int):
    """Linear from `warmup` at step 0 to `final` at `warmup_steps`, then constant (DINO steps
    its linspace once per epoch; here it moves every step)."""
    def schedule(step):
        progress = jnp.clip(step / warmup_steps, 0.0, 1.0) if warmup_steps > 0 else 1.0
        return warmup + (final - warmup) * progress
    return schedule


def cross_entropy(teacher_logits, student_logits, center, teacher_temp, student_temp):
    """Per-sample H(softmax((t - c) / T_t), softmax(s / T_s)), no gradient to the teacher."""
    t = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits - center) / teacher_temp, axis=-1)
    return -jnp.sum(t * jax.nn.log_softmax(student_logits / student_temp, axis=-1), axis=-1)


@dataclasses.dataclass(frozen=True)
class DINO(MethodDefaults):
    net: nn.Module
    target_net: nn.Module
    ema_schedule: Callable
    view_configs: tuple[ViewConfig, ViewConfig]
    teacher_temperature: Callable  # step -> T_t
    student_temperature: float
    center_momentum: float
    num_prototypes: int
    freeze_last_layer_steps: int = 0

    def init_state(self):
        return {"center": jnp.zeros((self.num_prototypes,), jnp.float32)}

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        """Per-sample mean of the two cross-view terms (DINO divides by the number of terms)."""
        ce = lambda t, s: cross_entropy(t["proj"], s["proj"], state["center"],
                                        self.teacher_temperature(step), self.student_temperature)
        return 0.5 * (ce(target_b, online_a) + ce(target_a, online_b))

    def multicrop_loss(self, student, teacher, state, step):
        """DINOLoss.forward over 2 global + N local crops, main_dino.py:380-404 (7c446df).
        student: the student's outputs of every crop, the two global views first (2 + N);
        teacher: the teacher's outputs of the two global views (main_dino.py:318: only they pass
        through the teacher). Each student crop is compared with each teacher crop except its
        own global view (:396-398), and the sum is divided by the number of terms, 2 (N + 1)
        (:402). Per sample; its batch mean is DINO's loss (each term's `.mean()`, :400). With
        N = 0 it is `pair_loss`. The centre's update is `update_state`'s: the teacher's global
        outputs (:403)."""
        temperature = self.teacher_temperature(step)
        terms = [cross_entropy(t["proj"], s["proj"], state["center"], temperature,
                               self.student_temperature)
                 for iq, t in enumerate(teacher) for v, s in enumerate(student) if v != iq]
        return sum(terms) / len(terms)

    def update_state(self, state, online_a, online_b, target_a, target_b, step):
        """centre <- m centre + (1 - m) mean of both views' teacher logits over the global batch."""
        del online_a, online_b, step
        batch_center = 0.5 * (target_a["proj"].mean(0) + target_b["proj"].mean(0))
        m = self.center_momentum
        return {"center": m * state["center"] + (1 - m) * jax.lax.stop_gradient(batch_center)}

    def adjust_updates(self, updates, step):
        """No update of the prototype layer in the first steps (DINO's cancel_gradients_last_layer;
        meanwhile its momentum buffer only sees weight decay)."""
        frozen = step < self.freeze_last_layer_steps
        flat = flax.traverse_util.flatten_dict(updates)
        return flax.traverse_util.unflatten_dict(
            {k: jnp.where(frozen, jnp.zeros_like(u), u) if "last_layer" in k else u
             for k, u in flat.items()})


def make(cfg, ctx: MethodContext) -> DINO:
    """cfg: config.dino (proj_hidden, bottleneck_dim, num_prototypes, norm_last_layer,
    student_temperature, teacher_temperature, warmup_teacher_temperature,
    warmup_teacher_temperature_epochs, center_momentum, tau_base, freeze_last_layer_epochs)."""
    head = DINOHead(num_prototypes=cfg.num_prototypes, hidden_dim=cfg.proj_hidden,
                    bottleneck_dim=cfg.bottleneck_dim, norm_last_layer=cfg.norm_last_layer,
                    dtype=ctx.dtype)
    net = SSLNet(ctx.backbone, head)
    warmup_steps = round(cfg.warmup_teacher_temperature_epochs * ctx.steps_per_epoch)
    return DINO(net=net, target_net=net,
                ema_schedule=schedules.ema_cosine_schedule(cfg.tau_base, ctx.total_steps),
                view_configs=ctx.view_configs,
                teacher_temperature=teacher_temperature_schedule(
                    cfg.warmup_teacher_temperature, cfg.teacher_temperature, warmup_steps),
                student_temperature=cfg.student_temperature,
                center_momentum=cfg.center_momentum, num_prototypes=cfg.num_prototypes,
                freeze_last_layer_steps=round(cfg.freeze_last_layer_epochs * ctx.steps_per_epoch))
