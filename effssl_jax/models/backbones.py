"""The backbone registry: every `model.arch`, ResNets (resnet.py) and ViTs (vit.py), behind one
interface, so that the methods, the train step, evaluation and the cost accounting never ask which
family they run.

For each arch it says how to build the flax module from `config.model` (`from_config`), the size of
its features (`feature_dim`, what the heads and methods are sized by), which input sides it can
take (`resolution_multiple`: a ViT tiles its input into patches, so every resolution a run uses
must be a multiple of the patch size; a ResNet takes any side), how far it downsamples
(`output_stride`, which floors Hard Augment's scoring side), whether eq. 9's cost model (cost
quadratic in resolution) describes it (`cost_is_quadratic`: not for ViTs, whose attention is
quadratic in the number of tokens, so the plan measures their FLOPs per bucket instead), and the
checkpoint format its weights export to (`export_format`: torchvision or timm).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn

from effssl_jax.models import resnet, vit

# arch -> family; the order is the one the config's error message lists.
BACKBONES = {**{name: "resnet" for name in resnet.ARCHS}, **{name: "vit" for name in vit.ARCHS}}


def family(arch: str) -> str:
    """'resnet' or 'vit'."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; valid names: {', '.join(BACKBONES)}")
    return BACKBONES[arch]


def is_vit(arch: str) -> bool:
    return family(arch) == "vit"


def vit_img_size(config) -> int:
    """The side a ViT's position embedding is stored for (timm's `img_size`): model.img_size, or
    progressive.r_max when that is 0. Other resolutions resample it (vit.resample_pos_embed)."""
    return config.model.img_size or config.progressive.r_max


def from_config(config, dtype: Any) -> nn.Module:
    """The backbone of a run's config: images [B, r, r, 3] -> features [B, feature_dim], with
    float32 parameters and `dtype` compute (bfloat16 on accelerators). A ResNet zero-initialises
    its blocks' last BN scales under model.zero_init_residual (ViTs have none: the config's
    validation refuses it)."""
    m = config.model
    if is_vit(m.arch):
        return vit.get_vit(m.arch, patch_size=m.patch_size, img_size=vit_img_size(config),
                           dtype=dtype)
    return resnet.get_backbone(m.arch, width=m.width, cifar_stem=m.cifar_stem, dtype=dtype,
                               conv_impl=m.conv_impl, zero_init_residual=m.zero_init_residual)


def feature_dim(model_config) -> int:
    """Size of the backbone's features: a ViT's embedding width (its class token's output), a
    ResNet's pooled channels."""
    if is_vit(model_config.arch):
        return vit.ARCHS[model_config.arch][0]
    return resnet.feature_dim(model_config.arch, model_config.width)


def resolution_multiple(model_config) -> int:
    """Every input side must be a multiple of this: the patch size for ViTs, 1 (any side) for
    ResNets. ResNets' resolution buckets are only tied to `progressive.bucket_step`."""
    return model_config.patch_size if is_vit(model_config.arch) else 1


def output_stride(model_config) -> int:
    """Input pixels per side of one cell of the last feature map: 32 for a ResNet with the
    ImageNet stem (stride-2 conv and max-pool, then three stride-2 stages), 8 with the CIFAR stem
    (no downsampling stem), the patch size for a ViT."""
    if is_vit(model_config.arch):
        return model_config.patch_size
    return 8 if model_config.cifar_stem else 32


def cost_is_quadratic(arch: str) -> bool:
    """Whether eq. 9's model (cost proportional to r^2) predicts the speed-up: true for the
    convolutional ResNets; not for ViTs, whose attention costs grow as tokens^2 = r^4 and whose
    class token costs the same at every resolution."""
    return not is_vit(arch)


def export_format(arch: str) -> str:
    """The default format of `python -m effssl_jax.export`: 'torchvision' or 'timm'."""
    return "timm" if is_vit(arch) else "torchvision"
