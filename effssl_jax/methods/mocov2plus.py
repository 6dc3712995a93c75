"""MoCo v2+ as in solo-learn (Chen et al., 2020, "Improved baselines with momentum contrastive
learning", made symmetric): InfoNCE between online queries and EMA-target keys, negatives from a
queue of past keys.

As solo-learn's `MoCoV2Plus`, there are two queues, one per view slot: queue[0] holds past keys of
the first view, queue[1] of the second; q_a is contrasted with k_b against queue[1] and q_b with k_a
against queue[0]; after the step both slots' new keys replace the oldest `batch` entries.

Hyper-parameters (config.mocov2plus): projector Linear(2048)-ReLU-Linear(256) without BN and
temperature 0.2 (solo-learn ImageNet-100 mocov2plus.yaml; MoCo v2 uses a 128-d output and the same
temperature); target EMA tau cosine-increased from 0.99 to final_tau 0.999 (same solo-learn
config; MoCo v2 uses a constant 0.999); queue_size 4096 keys per view slot (solo-learn and MoCo use
65536 on ImageNet-100 / ImageNet; 4096 is ~43% of Imagenette's ~9.5k training images, close to
the ~52% that 65536 is of ImageNet-100's 126k).

Views: MoCo v2's augmentation (`--aug-plus`), the same for both views (`official_views`, with its
source).
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
from effssl_jax.models.heads import MLP, SSLNet

QUEUE_SEED = 0


def info_nce(q, k, queue, temperature):
    """Per-sample cross-entropy of the positive key among [k, queue] (q, k, queue L2-normalised)."""
    k = jax.lax.stop_gradient(k)
    pos = jnp.sum(q * k, axis=-1, keepdims=True)
    logits = jnp.concatenate([pos, q @ queue.T], axis=1) / temperature
    return jax.nn.logsumexp(logits, axis=1) - logits[:, 0]


def official_views() -> tuple[ViewConfig, ViewConfig]:
    """MoCo v2's augmentation (`--aug-plus`), both views alike: facebookresearch/moco
    main_moco.py:326-335 (commit 7397dfe): RandomResizedCrop(224, scale=(0.2, 1.0)),
    ColorJitter(0.4, 0.4, 0.4, 0.1) at p 0.8, RandomGrayscale(p=0.2), GaussianBlur([0.1, 2.0])
    at p 0.5 (moco/loader.py:24-33: PIL's blur with sigma uniform in [0.1, 2]),
    RandomHorizontalFlip() (p 0.5). SimSiam's recipe, which it copies."""
    view = ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
                      jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                      gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
    return view, view


@dataclasses.dataclass(frozen=True)
class MoCoV2Plus(MethodDefaults):
    net: nn.Module
    target_net: nn.Module
    ema_schedule: Callable
    view_configs: tuple[ViewConfig, ViewConfig]
    temperature: float
    queue_size: int
    dim: int

    def init_state(self):
        """queue [2, K, D] of random unit vectors (as MoCo) and the next write position."""
        queue = jax.random.normal(jax.random.key(QUEUE_SEED), (2, self.queue_size, self.dim))
        return {"queue": l2_normalize(queue), "ptr": jnp.zeros((), jnp.int32)}

    def pair_loss(self, online_a, online_b, target_a, target_b, state, step):
        del step
        q_a, q_b = l2_normalize(online_a["proj"]), l2_normalize(online_b["proj"])
        k_a, k_b = l2_normalize(target_a["proj"]), l2_normalize(target_b["proj"])
        queue = jax.lax.stop_gradient(state["queue"])
        return 0.5 * (info_nce(q_a, k_b, queue[1], self.temperature)
                      + info_nce(q_b, k_a, queue[0], self.temperature))

    def update_state(self, state, online_a, online_b, target_a, target_b, step):
        """Write the new keys (view a -> queue[0], view b -> queue[1]) over the oldest ones."""
        del online_a, online_b, step
        keys = jnp.stack([l2_normalize(target_a["proj"]), l2_normalize(target_b["proj"])])
        batch = keys.shape[1]
        if batch > self.queue_size:
            raise ValueError(f"mocov2plus.queue_size={self.queue_size} must be >= the global "
                             f"batch size {batch}")
        rows = (state["ptr"] + jnp.arange(batch)) % self.queue_size  # wraps around the end
        queue = state["queue"].at[:, rows].set(jax.lax.stop_gradient(keys).astype(jnp.float32))
        return {"queue": queue, "ptr": (state["ptr"] + batch) % self.queue_size}


def make(cfg, ctx: MethodContext) -> MoCoV2Plus:
    """cfg: config.mocov2plus (proj_hidden, proj_dim, temperature, queue_size, tau_base,
    final_tau)."""
    projector = MLP(hidden_dims=(cfg.proj_hidden,), out_dim=cfg.proj_dim, hidden_bias=True,
                    hidden_bn=False, dtype=ctx.dtype)
    net = SSLNet(ctx.backbone, projector)
    return MoCoV2Plus(net=net, target_net=net,
                      ema_schedule=schedules.cosine_between_schedule(
                          cfg.tau_base, cfg.final_tau, ctx.total_steps),
                      view_configs=ctx.view_configs,
                      temperature=cfg.temperature, queue_size=cfg.queue_size, dim=cfg.proj_dim)
