"""SimSiam (Chen & He, 2021): symmetric negative cosine with a predictor and stop-gradient.

Views: SimSiam's augmentation, the same for both views (`official_views`, with its source)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn

from effssl_jax.augment import ViewConfig
from effssl_jax.methods.base import MethodContext, MethodDefaults, negative_cosine
from effssl_jax.models.heads import MLP, SSLNet


def official_views() -> tuple[ViewConfig, ViewConfig]:
    """SimSiam's augmentation, both views alike: facebookresearch/simsiam main_simsiam.py:229-236
    (commit a7bc177): RandomResizedCrop(224, scale=(0.2, 1.)), ColorJitter(0.4, 0.4, 0.4, 0.1)
    at p 0.8, RandomGrayscale(p=0.2), GaussianBlur([.1, 2.]) at p 0.5 (simsiam/loader.py:23-32:
    PIL's blur with sigma uniform in [0.1, 2]), RandomHorizontalFlip() (p 0.5)."""
    view = ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
                      jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                      gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
    return view, view


@dataclasses.dataclass(frozen=True)
class SimSiam(MethodDefaults):
    net: nn.Module
    view_configs: tuple[ViewConfig, ViewConfig]
    target_net: None = None
    ema_schedule: None = None

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        del target_a, target_b, state, step
        return 0.5 * (negative_cosine(online_a["pred"], online_b["proj"])
                      + negative_cosine(online_b["pred"], online_a["proj"]))


def make(cfg, ctx: MethodContext) -> SimSiam:
    """cfg: config.simsiam (proj_dim, proj_hidden (0: feature_dim), proj_layers, pred_hidden)."""
    hidden = cfg.proj_hidden or ctx.feature_dim
    projector = MLP(hidden_dims=(hidden,) * (cfg.proj_layers - 1), out_dim=cfg.proj_dim,
                    out_bias=False, out_bn=True, out_bn_affine=False, dtype=ctx.dtype)
    predictor = MLP(hidden_dims=(cfg.pred_hidden,), out_dim=cfg.proj_dim, dtype=ctx.dtype)
    return SimSiam(net=SSLNet(ctx.backbone, projector, predictor),
                   view_configs=ctx.view_configs)
