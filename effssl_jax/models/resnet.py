"""ResNet backbones (torchvision v1.5 layout) in Flax Linen.

Parameter tree, 1:1 with torchvision's state_dict (see ``convert.py``)::

    conv1, bn1                                   stem
    layer{i}_{j}/conv{1,2[,3]}, bn{1,2[,3]}      residual block j of stage i
    layer{i}_{j}/downsample_conv, downsample_bn  projection shortcut
    fc                                           optional classifier head

Inputs are NHWC. Padding, pooling and initialisation follow PyTorch exactly,
so converted weights give the same outputs.

``conv_impl`` ('auto' | 'xla' | 'matmul') picks how the convolutions and the stem
max-pool are computed, through ``cpu_conv``; the parameters are the same either way.

``zero_init_residual`` is torchvision's: the scale (gamma) of each residual block's
last BN (``bn2`` of a BasicBlock, ``bn3`` of a Bottleneck; not the shortcut's) starts
at 0, so every residual branch starts at 0 and each block as the identity (Goyal et
al. 2017). SimSiam's builder asks for it.
"""

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effssl_jax.models import cpu_conv
from effssl_jax.models.dtypes import at_least_float32

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

# torch.nn.Linear default: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def uniform_bias_init(fan_in: int):
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_pad(kernel_size: int):
    """PyTorch's symmetric `padding=k//2` (flax 'SAME' pads asymmetrically for stride 2)."""
    p = kernel_size // 2
    return ((p, p), (p, p))


def _shortcut(block, x, out_features: int):
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    x = block.conv(out_features, (1, 1), (block.strides, block.strides),
                   name='downsample_conv')(x)
    return block.norm(name='downsample_bn')(x)


def _last_bn_init(zero: bool):
    """Scale init of a block's last BN: zeros under zero_init_residual, else torch's ones."""
    return nn.initializers.zeros if zero else nn.initializers.ones


class BasicBlock(nn.Module):
    features: int
    strides: int
    conv: Any
    norm: Any
    zero_init_last: bool = False  # ResNet.zero_init_residual
    expansion = 1

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        y = self.conv(self.features, (3, 3), s, torch_pad(3), name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        y = self.conv(self.features, (3, 3), padding=torch_pad(3), name='conv2')(y)
        y = self.norm(name='bn2', scale_init=_last_bn_init(self.zero_init_last))(y)
        return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
    features: int
    strides: int
    conv: Any
    norm: Any
    zero_init_last: bool = False  # ResNet.zero_init_residual
    expansion = 4

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        y = self.conv(self.features, (1, 1), name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        # v1.5: the stride sits on the 3x3 conv, not on the first 1x1.
        y = self.conv(self.features, (3, 3), s, torch_pad(3), name='conv2')(y)
        y = nn.relu(self.norm(name='bn2')(y))
        y = self.conv(self.features * 4, (1, 1), name='conv3')(y)
        y = self.norm(name='bn3', scale_init=_last_bn_init(self.zero_init_last))(y)
        return nn.relu(y + _shortcut(self, x, self.features * 4))


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


class ResNet(nn.Module):
    stage_sizes: Sequence[int]
    block: str  # 'basic' | 'bottleneck'
    width: int = 64
    cifar_stem: bool = False
    num_classes: int | None = None
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9  # flax convention: 1 - torch's momentum (0.1)
    bn_eps: float = 1e-5
    conv_impl: str = 'auto'  # one of cpu_conv.CONV_IMPLS, see cpu_conv
    zero_init_residual: bool = False  # torchvision's: each block's last BN scale starts at 0

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init,
                       dtype=self.dtype, param_dtype=jnp.float32,
                       conv_general_dilated=cpu_conv.conv_general_dilated_for(self.conv_impl))
        max_pool = cpu_conv.max_pool_for(self.conv_impl)
        # Statistics are reduced over the whole batch axis: under jit with a
        # sharded batch, XLA inserts the cross-device reduction itself.
        # Two-pass variance (use_fast_variance=False) like torch: E[x^2]-E[x]^2
        # loses precision.
        norm = partial(nn.BatchNorm, use_running_average=not train,
                       momentum=self.bn_momentum, epsilon=self.bn_eps,
                       dtype=self.dtype, param_dtype=jnp.float32,
                       use_fast_variance=False)
        block_cls = BLOCKS[self.block]

        x = jnp.asarray(x, self.dtype)
        if self.cifar_stem:
            x = conv(self.width, (3, 3), padding=torch_pad(3), name='conv1')(x)
            x = nn.relu(norm(name='bn1')(x))
        else:
            x = conv(self.width, (7, 7), (2, 2), torch_pad(7), name='conv1')(x)
            x = nn.relu(norm(name='bn1')(x))
            x = max_pool(x, (3, 3), (2, 2), torch_pad(3))  # -inf padding, like torch

        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = block_cls(self.width * 2**i, strides, conv, norm,
                              self.zero_init_residual, name=f'layer{i + 1}_{j}')(x)

        x = jnp.mean(at_least_float32(x), axis=(1, 2))
        if self.num_classes is not None:
            x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init,
                         bias_init=uniform_bias_init(x.shape[-1]), name='fc')(x)
        return x


ARCHS = {  # name: (blocks per stage, block); resnet10 (one block a stage) is for tests and demos
    'resnet10': ((1, 1, 1, 1), 'basic'),
    'resnet18': ((2, 2, 2, 2), 'basic'),
    'resnet50': ((3, 4, 6, 3), 'bottleneck'),
}


def feature_dim(arch: str, width: int = 64) -> int:
    """Size of the pooled features of `arch` with base `width` (512 / 2048 at 64)."""
    if arch not in ARCHS:
        raise ValueError(f'unknown backbone {arch!r}; valid names: {sorted(ARCHS)}')
    return width * 8 * BLOCKS[ARCHS[arch][1]].expansion


def get_backbone(name: str, **kw) -> ResNet:
    if name not in ARCHS:
        raise ValueError(f'unknown backbone {name!r}; valid names: {sorted(ARCHS)}')
    stage_sizes, block = ARCHS[name]
    return ResNet(stage_sizes=stage_sizes, block=block, **kw)


def resnet18(**kw) -> ResNet:
    return get_backbone('resnet18', **kw)


def resnet50(**kw) -> ResNet:
    return get_backbone('resnet50', **kw)


BACKBONES = {name: partial(get_backbone, name) for name in ARCHS}
