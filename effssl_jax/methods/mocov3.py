"""MoCo v3 (Chen, Xie, He, ICCV 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers"): an online network with a predictor contrasts its queries with the keys of a
momentum (EMA) encoder; the negatives are the other keys of the batch, no queue.

As facebookresearch/moco-v3 `moco/builder.py` (`MoCo.forward`, `contrastive_loss`): the loss is
ctr(q1, k2) + ctr(q2, k1), ctr(q, k) = CrossEntropy(norm(q) norm(k)^T / T, labels=arange(N)) * 2T
with k from the momentum encoder, without gradient, gathered from all devices. Here the jitted
step sees the global batch as one sharded array (as simclr.nt_xent), so the keys of every device
are the negatives without an explicit all-gather.

Heads (`MoCo._build_mlp`, `MoCo_ViT`): Linear layers without bias, BN + ReLU after each hidden
layer and a BN without affine parameters after the last; the projector has 3 layers
(hidden 4096, out 256) and the predictor 2 (hidden 4096, out 256). This is the ViT variant, used
for every backbone here (MoCo_ResNet's projector has 2 layers and its predictor no last BN).
Views: BYOL's recipe, as main_moco.py copies it (`official_views`, with its source).

Hyper-parameters (config.mocov3): temperature 0.2 (CONFIG.md's ViT recipes, `--moco-t=.2`; 1.0
is the ResNet-50 default); momentum m 0.99 increased to 1 by a half-cycle cosine over training
(`--moco-m=0.99 --moco-m-cos`, main_moco.py `adjust_moco_momentum`).

The order of the momentum update differs by one step from the reference: it updates the momentum
encoder with the current online weights before computing the keys, whereas here the EMA follows
each optimiser update (step.py), so the keys of step t see the same online weights with m of
step t - 1 instead of t.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from effssl_jax import schedules
from effssl_jax.augment import ViewConfig
from effssl_jax.methods.base import MethodContext, MethodDefaults, l2_normalize
from effssl_jax.methods.byol import asymmetric_views
from effssl_jax.models.dtypes import at_least_float32
from effssl_jax.models.heads import MLP, SSLNet


def contrastive_loss(q, k, temperature):
    """Per-sample ctr(q, k) [B]: 2T x the cross-entropy of query i's own key k_i among all keys
    (moco-v3 `contrastive_loss`, whose batch mean is this one's mean). k gets no gradient."""
    q = l2_normalize(at_least_float32(q))
    k = l2_normalize(at_least_float32(jax.lax.stop_gradient(k)))
    logits = q @ k.T / temperature
    return 2 * temperature * (jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))


def moco_mlp(num_layers: int, hidden: int, out: int, dtype) -> MLP:
    """MoCo v3's `_build_mlp(num_layers, ., hidden, out, last_bn=True)`: bias-free Linear layers,
    BN + ReLU between them, a BN without affine parameters at the end."""
    return MLP(hidden_dims=(hidden,) * (num_layers - 1), out_dim=out, hidden_bias=False,
               hidden_bn=True, out_bias=False, out_bn=True, out_bn_affine=False, dtype=dtype)


def official_views() -> tuple[ViewConfig, ViewConfig]:
    """MoCo v3's augmentation, BYOL's: facebookresearch/moco-v3 main_moco.py:261-285 (commit
    c349e6e), augmentation1 / augmentation2: RandomResizedCrop(224, scale=(crop_min, 1.)) with
    `--crop-min` 0.08 (:117), ColorJitter(0.4, 0.4, 0.2, 0.1) at p 0.8, RandomGrayscale(p=0.2),
    GaussianBlur([.1, 2.]) at p 1.0 / 0.1, Solarize at p 0 / 0.2 (moco/loader.py:38-42: PIL's
    solarize at 128), RandomHorizontalFlip() (p 0.5)."""
    return asymmetric_views(ViewConfig(
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5, jitter_prob=0.8,
        brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, gray_prob=0.2,
        blur_sigma=(0.1, 2.0)))


@dataclasses.dataclass(frozen=True)
class MoCoV3(MethodDefaults):
    net: nn.Module
    target_net: nn.Module
    ema_schedule: Callable
    view_configs: tuple[ViewConfig, ViewConfig]
    temperature: float

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        """Per-sample ctr(q_a, k_b) + ctr(q_b, k_a): queries are the online predictions, keys
        the momentum encoder's projections of the other view."""
        del state, step
        return (contrastive_loss(online_a["pred"], target_b["proj"], self.temperature)
                + contrastive_loss(online_b["pred"], target_a["proj"], self.temperature))


def make(cfg, ctx: MethodContext) -> MoCoV3:
    """cfg: config.mocov3 (proj_hidden, proj_dim, pred_hidden, temperature, tau_base)."""
    projector = moco_mlp(3, cfg.proj_hidden, cfg.proj_dim, ctx.dtype)
    predictor = moco_mlp(2, cfg.pred_hidden, cfg.proj_dim, ctx.dtype)
    return MoCoV3(net=SSLNet(ctx.backbone, projector, predictor),
                  target_net=SSLNet(ctx.backbone, projector),
                  ema_schedule=schedules.ema_cosine_schedule(cfg.tau_base, ctx.total_steps),
                  view_configs=ctx.view_configs, temperature=cfg.temperature)
