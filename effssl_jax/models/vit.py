"""Vision Transformers (Dosovitskiy et al. 2021) in Flax Linen with timm's parameter layout and
names, so that weights move between the two one to one (to_timm / from_timm): a class token, a
learned absolute position embedding stored for the grid of `img_size`, pre-norm blocks (LayerNorm
eps 1e-6, fused qkv attention, GELU MLP of 4x width), a final LayerNorm, and the class token's
output as the feature (timm's `global_pool='token'`, `num_classes=0`).

Any input side that is a multiple of the patch size runs: the position embedding is resampled to
that grid as timm's `resample_abs_pos_embed` does (bicubic, antialiased, the class token's entry
kept), so a progressive resolution schedule can train one set of weights at every bucket.
Parameters are float32; `dtype` is the compute dtype (bfloat16 on accelerators).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from effssl_jax.models.dtypes import at_least_float32

# name: (embed_dim, depth, num_heads), as timm's vit_{tiny,small,base}_patch16_224; vit_micro
# (ViT-Ti's 3 heads, 2 blocks of width 48) is for tests and demos, as resnet10 is for ResNets.
ARCHS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12),
         "vit_micro": (48, 2, 3)}


def resample_pos_embed(pos_embed, grid: int, num_prefix_tokens: int = 1):
    """pos_embed [1, prefix + g*g, D] -> [1, prefix + grid*grid, D]: the patch entries resized as
    an image (bicubic, antialiased), the prefix (class token) entries kept."""
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = int(round(np.sqrt(patches.shape[1])))
    if old == grid:
        return pos_embed
    dim = patches.shape[-1]
    image = patches.reshape(old, old, dim).astype(jnp.float32)
    image = jax.image.resize(image, (grid, grid, dim), "bicubic", antialias=True)
    return jnp.concatenate([prefix, image.reshape(1, grid * grid, dim).astype(pos_embed.dtype)],
                           axis=1)


class Attention(nn.Module):
    dim: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, _ = x.shape
        head_dim = self.dim // self.num_heads
        qkv = nn.Dense(3 * self.dim, dtype=self.dtype, name="qkv")(x)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        logits = at_least_float32(q @ k.swapaxes(-1, -2))
        weights = jax.nn.softmax(logits / np.sqrt(head_dim), axis=-1).astype(self.dtype)
        out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
        return nn.Dense(self.dim, dtype=self.dtype, name="proj")(out)


class Mlp(nn.Module):
    dim: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
        return nn.Dense(self.dim, dtype=self.dtype, name="fc2")(x)


class Block(nn.Module):
    dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
        x = x + Attention(self.dim, self.num_heads, self.dtype, name="attn")(norm("norm1")(x))
        return x + Mlp(self.dim, int(self.dim * self.mlp_ratio), self.dtype,
                       name="mlp")(norm("norm2")(x))


class PatchEmbed(nn.Module):
    patch_size: int
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = self.patch_size
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="proj")(x)
        return x.reshape(x.shape[0], -1, self.dim)


class ViT(nn.Module):
    """The ViT backbone: images [B, H, H, 3] (H a multiple of patch_size) -> class-token
    features [B, embed_dim] (float32, or float64 in float64 runs, whatever `dtype` computes).
    `train` is accepted for the ResNet interface (no dropout here)."""
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    patch_size: int = 16
    img_size: int = 224  # the grid the position embedding is stored at
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1] % self.patch_size or x.shape[1] != x.shape[2]:
            raise ValueError(f"a {x.shape[1]}x{x.shape[2]} input does not tile into "
                             f"{self.patch_size} px patches; use square sides that are "
                             f"multiples of {self.patch_size}")
        tokens = PatchEmbed(self.patch_size, self.embed_dim, self.dtype,
                            name="patch_embed")(x.astype(self.dtype))
        grid = self.img_size // self.patch_size
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, self.embed_dim))
        pos = self.param("pos_embed", nn.initializers.normal(0.02),
                         (1, 1 + grid * grid, self.embed_dim))
        pos = resample_pos_embed(pos, x.shape[1] // self.patch_size)
        cls = jnp.broadcast_to(cls, (tokens.shape[0], 1, self.embed_dim)).astype(self.dtype)
        h = jnp.concatenate([cls, tokens], axis=1) + pos.astype(self.dtype)
        for i in range(self.depth):
            h = Block(self.embed_dim, self.num_heads, self.mlp_ratio, self.dtype,
                      name=f"blocks_{i}")(h)
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(h)
        return at_least_float32(h[:, 0])  # as ResNets' features

    def features(self, x, train: bool = False):
        return self(x, train)


def get_vit(name: str, patch_size: int = 16, img_size: int = 224, **kw) -> ViT:
    if name not in ARCHS:
        raise ValueError(f"unknown ViT {name!r}; valid names: {sorted(ARCHS)}")
    dim, depth, heads = ARCHS[name]
    return ViT(embed_dim=dim, depth=depth, num_heads=heads, patch_size=patch_size,
               img_size=img_size, **kw)


def timm_spec(name: str, patch_size: int = 16, img_size: int = 224) -> tuple[str, dict]:
    """(timm model name, `timm.create_model` kwargs) of the same network, for
    `timm.create_model(model_name, pretrained=False, **kwargs)` and then `load_state_dict` of
    to_timm's dict: timm's vit_*_patch16_224 with the patch and image size (and vit_micro's
    widths) overridden, no classifier (the class token's output, as here), and
    `dynamic_img_size`, so that timm resamples the position embedding for any input side that is
    a multiple of the patch size, as this module does."""
    if name not in ARCHS:
        raise ValueError(f"unknown ViT {name!r}; valid names: {sorted(ARCHS)}")
    dim, depth, heads = ARCHS[name]
    timm_name = f"{'vit_tiny' if name == 'vit_micro' else name}_patch16_224"
    return timm_name, {"patch_size": patch_size, "img_size": img_size, "embed_dim": dim,
                       "depth": depth, "num_heads": heads, "num_classes": 0,
                       "global_pool": "token", "dynamic_img_size": True}


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def to_timm(params) -> dict[str, np.ndarray]:
    """timm state_dict names and layouts (numpy) of a ViT's params."""
    out = {}
    for path, v in _flat(jax.device_get(params)):
        v = np.asarray(v)
        name = ".".join(p.replace("blocks_", "blocks.") for p in path[:-1])
        leaf = path[-1]
        if leaf in ("cls_token", "pos_embed"):
            out[leaf] = v
        elif leaf == "kernel":
            out[f"{name}.weight"] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
        elif leaf == "scale":
            out[f"{name}.weight"] = v
        else:
            out[f"{name}.{leaf}"] = v
    return out


def from_timm(state_dict) -> dict:
    """A ViT's params from a timm state_dict (torch tensors or numpy); no head."""
    params: dict = {}
    for key, v in state_dict.items():
        v = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
        if key.startswith("head."):
            continue
        *path, leaf = key.split(".")
        path = [f"blocks_{path[1]}", *path[2:]] if path and path[0] == "blocks" else path
        if not path:
            params[leaf] = v
            continue
        node = params
        for p in path:
            node = node.setdefault(p, {})
        if leaf == "weight" and v.ndim == 4:
            node["kernel"] = v.transpose(2, 3, 1, 0)
        elif leaf == "weight" and v.ndim == 2:
            node["kernel"] = v.T
        elif leaf == "weight":
            node["scale"] = v
        else:
            node[leaf] = v
    return params
