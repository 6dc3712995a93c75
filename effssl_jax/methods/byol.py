"""BYOL (Grill et al., NeurIPS 2020): an online network with a predictor regresses the projection
of an EMA target network; symmetric normalised-MSE loss.

Hyper-parameters (config.byol): projector Linear(4096)-BN-ReLU-Linear(256) and predictor of the
same shape (BYOL paper Sec. 3.3; solo-learn's ImageNet-100 config uses a wider 8192 predictor),
the last Linear without bias as in BYOL's code (tests/test_heads_vs_torch.py; solo-learn has one),
tau_base 0.99 cosine-increased to 1 (solo-learn ImageNet-100 byol.yaml; the paper uses 0.996
with batch 4096).

Views: BYOL's asymmetric pair (`official_views`, with its source).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from effssl_jax import schedules
from effssl_jax.augment import ViewConfig
from effssl_jax.methods.base import MethodContext, MethodDefaults, negative_cosine
from effssl_jax.models.heads import MLP, SSLNet


def asymmetric_views(view: ViewConfig) -> tuple[ViewConfig, ViewConfig]:
    """BYOL's asymmetry on top of `view` (BYOL paper Table 6; also DINO's two global crops and MoCo
    v3's views): blur always on the first view, no solarisation; blur with p 0.1 and solarisation
    with p 0.2 on the second. Everything else stays as in `view` (recipes.paper_views puts it on
    the paper's single setting)."""
    return (dataclasses.replace(view, blur_prob=1.0, solarize_prob=0.0),
            dataclasses.replace(view, blur_prob=0.1, solarize_prob=0.2))


def official_views() -> tuple[ViewConfig, ViewConfig]:
    """BYOL's augmentation, from deepmind/deepmind-research (commit d8df415): crop area
    (0.08, 1) and log-uniform aspect ratio (3/4, 4/3) (byol/utils/dataset.py:206-233,
    _decode_and_random_crop); per view (byol/utils/augmentations.py:27-66, augment_config): flip,
    colour jitter brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1 with p 0.8, grayscale
    p 0.2, blur with sigma in [0.1, 2] and p 1.0 (view 1) / 0.1 (view 2), solarisation at 0.5
    with p 0.0 / 0.2."""
    return asymmetric_views(ViewConfig(
        crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5, jitter_prob=0.8,
        brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, gray_prob=0.2,
        blur_sigma=(0.1, 2.0)))


def normalized_mse(p, z):
    """Per-sample ||p/|p| - sg(z)/|z|||^2 = 2 - 2 cos(p, z)."""
    return 2.0 + 2.0 * negative_cosine(p, z)


@dataclasses.dataclass(frozen=True)
class BYOL(MethodDefaults):
    net: nn.Module
    target_net: nn.Module
    ema_schedule: Callable
    view_configs: tuple[ViewConfig, ViewConfig]

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        """Per-sample L + L~ (the paper's symmetrised loss; solo-learn sums both directions)."""
        del state, step
        return (normalized_mse(online_a["pred"], target_b["proj"])
                + normalized_mse(online_b["pred"], target_a["proj"]))


def make(cfg, ctx: MethodContext) -> BYOL:
    """cfg: config.byol (proj_hidden, proj_dim, pred_hidden, tau_base)."""
    # deepmind-research byol/utils/networks.py MLP: the last Linear has no bias; the hidden one's
    # (zero-initialised in haiku) is cancelled by the BN after it, so it is left out here.
    projector = MLP(hidden_dims=(cfg.proj_hidden,), out_dim=cfg.proj_dim, out_bias=False,
                    dtype=ctx.dtype)
    predictor = MLP(hidden_dims=(cfg.pred_hidden,), out_dim=cfg.proj_dim, out_bias=False,
                    dtype=ctx.dtype)
    return BYOL(net=SSLNet(ctx.backbone, projector, predictor),
                target_net=SSLNet(ctx.backbone, projector),
                ema_schedule=schedules.ema_cosine_schedule(cfg.tau_base, ctx.total_steps),
                view_configs=ctx.view_configs)
