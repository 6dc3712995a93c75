"""Projection and prediction heads (MLPs on pooled backbone features)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from effssl_jax.models.dtypes import at_least_float32


def torch_linear_init(fan_in_axis: int = 0):
    """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias."""
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=fan_in_axis)


class Dense(nn.Module):
    """nn.Dense with PyTorch's default initialisation of both kernel and bias."""
    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        bound = 1.0 / jnp.sqrt(fan_in)
        bias_init = lambda key, shape, dtype: (nn.initializers.uniform(2 * bound)(key, shape, dtype)
                                               - bound)
        return nn.Dense(self.features, use_bias=self.use_bias, dtype=self.dtype,
                        kernel_init=torch_linear_init(), bias_init=bias_init)(x)


class MLP(nn.Module):
    """Linear(+BN)+ReLU hidden layers, then a linear output layer (optionally followed by BN).

    SimSiam projector: hidden (d, d), no hidden bias, output BN without affine parameters.
    SimSiam predictor: hidden (512,), output with bias, no output BN. BYOL/MoCo/SimCLR: see methods.
    """
    hidden_dims: Sequence[int]
    out_dim: int
    hidden_bias: bool = False
    hidden_bn: bool = True
    out_bias: bool = True
    out_bn: bool = False
    out_bn_affine: bool = True
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda **kw: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                       epsilon=1e-5, dtype=self.dtype, **kw)
        for width in self.hidden_dims:
            x = Dense(width, use_bias=self.hidden_bias, dtype=self.dtype)(x)
            if self.hidden_bn:
                x = bn()(x)
            x = nn.relu(x)
        x = Dense(self.out_dim, use_bias=self.out_bias, dtype=self.dtype)(x)
        if self.out_bn:
            x = bn(use_scale=self.out_bn_affine, use_bias=self.out_bn_affine)(x)
        return at_least_float32(x)


class SSLNet(nn.Module):
    """Backbone -> projector -> (predictor). Returns a dict of the outputs a method needs."""
    backbone: nn.Module
    projector: nn.Module
    predictor: nn.Module | None = None

    def __call__(self, x, train: bool):
        feat = self.backbone(x, train=train)
        out = {"feat": feat, "proj": self.projector(feat, train=train)}
        if self.predictor is not None:
            out["pred"] = self.predictor(out["proj"], train=train)
        return out

    def features(self, x):
        """Backbone features in evaluation mode (kNN, linear probe)."""
        return self.backbone(x, train=False)
