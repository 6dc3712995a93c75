"""SimCLR (Chen et al., ICML 2020): NT-Xent over the global batch, no target network.

Hyper-parameters (config.simclr): projector Linear(2048)-ReLU-Linear(256) without BN, i.e. the
paper's g(h) = W2 relu(W1 h) (SimCLR v1 Sec. 2.1) at solo-learn's widths (its CIFAR config;
its ImageNet-100 config uses 4096/512); temperature 0.2 (solo-learn ImageNet-100 simclr.yaml;
the paper's best at batch 4096 is 0.1).

Views: SimCLR's augmentation at colour strength 1, the same for both views (`official_views`,
with its source).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from effssl_jax.augment import ViewConfig
from effssl_jax.methods.base import MethodContext, MethodDefaults, l2_normalize
from effssl_jax.models.dtypes import at_least_float32
from effssl_jax.models.heads import MLP, SSLNet


def nt_xent(z_a, z_b, temperature):
    """Per-sample NT-Xent [B]: the mean of the two anchors' losses (i in view a, i in view b).

    The 2B embeddings are the global batch (under jit over a mesh the arrays are global), so each
    anchor's negatives are the other 2B - 2 embeddings of every device. Its mean over the batch
    equals the usual NT-Xent mean over the 2B anchors.
    """
    b = z_a.shape[0]
    z = l2_normalize(at_least_float32(jnp.concatenate([z_a, z_b])))
    logits = z @ z.T / temperature
    logits = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, logits)  # not its own negative
    positive = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    per_anchor = (jax.nn.logsumexp(logits, axis=1)
                  - jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0])
    return 0.5 * (per_anchor[:b] + per_anchor[b:])


def official_views() -> tuple[ViewConfig, ViewConfig]:
    """SimCLR's augmentation, both views alike, from google-research/simclr data_util.py (commit
    383d414): crop area (0.08, 1) and aspect ratio (3/4, 4/3) (crop_and_resize, :315-325); flip
    p 0.5 (preprocess_for_train, :471-472); colour jitter at strength s = 1 (run.py:239-241,
    `color_jitter_strength`): brightness, contrast, saturation 0.8 s and hue 0.2 s (color_jitter,
    :74-77) applied with p 0.8, then grayscale with p 0.2 (random_color_jitter, :387-394); blur
    with sigma uniform in [0.1, 2] (random_blur, :410-413; one sigma per batch there, one per
    image here) on each image with p 0.5 (batch_random_blur, :417; model.py:55-57)."""
    view = ViewConfig(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
                      jitter_prob=0.8, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                      gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
    return view, view


@dataclasses.dataclass(frozen=True)
class SimCLR(MethodDefaults):
    net: nn.Module
    view_configs: tuple[ViewConfig, ViewConfig]
    temperature: float
    target_net: None = None
    ema_schedule: None = None

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        del target_a, target_b, state, step
        return nt_xent(online_a["proj"], online_b["proj"], self.temperature)


def make(cfg, ctx: MethodContext) -> SimCLR:
    """cfg: config.simclr (proj_hidden, proj_dim, temperature)."""
    projector = MLP(hidden_dims=(cfg.proj_hidden,), out_dim=cfg.proj_dim, hidden_bias=True,
                    hidden_bn=False, dtype=ctx.dtype)
    return SimCLR(net=SSLNet(ctx.backbone, projector),
                  view_configs=ctx.view_configs, temperature=cfg.temperature)
