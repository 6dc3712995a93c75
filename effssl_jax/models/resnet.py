"""ResNet backbones (torchvision v1.5 layout) in Flax Linen.

Parameter tree, 1:1 with torchvision's state_dict (see ``convert.py``)::

    conv1, bn1                                   stem
    layer{i}_{j}/conv{1,2[,3]}, bn{1,2[,3]}      residual block j of stage i
    layer{i}_{j}/downsample_conv, downsample_bn  projection shortcut
    fc                                           optional classifier head

Inputs are NHWC. Padding, pooling and initialisation follow PyTorch exactly,
so converted weights give the same outputs.

``conv_impl`` picks how convolutions and the stem max-pool are computed (the
parameters are the same ``nn.Conv`` ones in every case):

* ``'xla'``: ``lax.conv_general_dilated`` and ``nn.max_pool``.
* ``'matmul'``: im2col -- the strided, shifted views of the input concatenated
  on the channel axis and one matmul with the reshaped kernel -- and a max-pool
  built from the same views. Autodiff turns both into matmuls / elementwise ops.
* ``'auto'`` (default): on CPU, ``'matmul'`` where XLA:CPU's convolution is
  slow and ``'xla'`` elsewhere (see ``_cpu_prefers_matmul``); ``'xla'`` on
  GPU/TPU. Decided at trace time from ``jax.default_backend()`` and static shapes.

Why: XLA:CPU (jaxlib 0.10) swaps the operands of a convolution whose input map
is smaller than its kernel (a 3x3 conv on a 2x2 map, or the input-gradient of a
stride-2 conv with a 2x2 output; algebraic simplifier, no flag turns it off) into
a window-reversed conv that its library kernels (YNNPACK/Eigen) do not take, so it
runs as a naive loop: 20-50x slower than the matmul (ResNet-18 at 64 px spends
85% of its step there). Strided and 1x1 convs are also somewhat faster as
matmuls, and the masks beat ``select_and_scatter`` (max-pool's gradient).
The big-map convs that stay on XLA run ~1.5x faster (wall) on Eigen than on
YNNPACK: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
(jaxlib 0.10; see ``benchmarks/conv_cpu.py --xla-flags``).
"""

from functools import partial, reduce
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

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


CONV_IMPLS = ('auto', 'xla', 'matmul')


def _taps(x, window, strides, padding, pad_value=0.0):
    """The kh*kw strided views of padded NHWC `x`, one per kernel offset (row-major)."""
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=pad_value)
    (kh, kw), (sh, sw) = window, strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    return [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]


def conv_matmul(x, kernel, strides, padding, precision=None):
    """NHWC x HWIO convolution as a single matmul over the kernel's taps (im2col)."""
    kh, kw, cin, cout = kernel.shape
    taps = _taps(x, (kh, kw), strides, padding)
    cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(cols, kernel.reshape(kh * kw * cin, cout), precision=precision)


def _cpu_prefers_matmul(x_shape, kernel_shape, strides) -> bool:
    """Where the matmul beats XLA:CPU's conv (measured fwd+bwd, batch 128, ResNet shapes).

    3x3 stride 1 on maps >= 4x4: XLA's conv wins (up to 1.5x on 32x32). Stride 2,
    1x1, and anything on a 2x2/1x1 map: the matmul (up to 50x). The stem (3 input
    channels) stays on XLA: its im2col buffer is big and its matmul narrow.
    """
    (_, h, w, cin), (kh, kw) = x_shape, kernel_shape[:2]
    if cin < 8:
        return False
    return kh * kw == 1 or max(strides) > 1 or h * w < 16


def _use_matmul(impl: str, cpu_prefers_matmul: bool) -> bool:
    if impl not in CONV_IMPLS:
        raise ValueError(f'unknown conv_impl {impl!r}; valid: {CONV_IMPLS}')
    if impl == 'auto':
        return jax.default_backend() == 'cpu' and cpu_prefers_matmul
    return impl == 'matmul'


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, *, impl: str = 'auto'):
    """Drop-in for ``lax.conv_general_dilated`` as called by ``nn.Conv``, see ``conv_impl``."""
    plain = (lhs.ndim == 4 and feature_group_count == 1
             and dimension_numbers == lax.conv_dimension_numbers(
                 lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
             and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))))
    if impl == 'matmul' and not plain:
        raise NotImplementedError('conv_impl="matmul" handles 2D NHWC/HWIO convs without '
                                  'dilation or feature groups')
    if plain and _use_matmul(impl, _cpu_prefers_matmul(lhs.shape, rhs.shape, window_strides)):
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
        return conv_matmul(lhs, rhs, window_strides, padding, precision)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision)


def max_pool(x, window, strides, padding, impl: str = 'auto'):
    """``nn.max_pool`` (pads with -inf); with the matmul impl, an elementwise max over taps.

    Its gradient goes, like ``nn.max_pool``'s and torch's, to the first maximum of each
    window in row-major order (ties are common after a ReLU), but instead of XLA:CPU's slow
    ``select_and_scatter`` the forward keeps the index of that tap (int8) and the backward
    adds each tap's masked cotangent back at its strided position (interior-padded ``pad``s,
    one fused elementwise loop).
    """
    if not _use_matmul(impl, True):
        return nn.max_pool(x, window, strides, padding)
    return _max_pool_taps(x, tuple(window), tuple(strides), tuple(map(tuple, padding)))


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_taps(x, window, strides, padding):
    return _max_pool_taps_fwd(x, window, strides, padding)[0]


def _max_pool_taps_fwd(x, window, strides, padding):
    taps = _taps(x, window, strides, padding, -jnp.inf)
    top = reduce(jnp.maximum, taps)
    first = jnp.zeros(top.shape, jnp.int8)
    for k in reversed(range(1, len(taps))):  # the lowest k with taps[k] == top wins
        first = jnp.where(taps[k] == top, jnp.int8(k), first)
    first = jnp.where(taps[0] == top, jnp.int8(0), first)
    return top, (first, x.shape)


def _max_pool_taps_bwd(window, strides, padding, res, g):
    first, shape = res
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = window, strides, padding
    hp, wp = shape[1] + pt + pb, shape[2] + pl + pr
    ho, wo = g.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    grad = None
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        # Tap k of output (m, n) reads padded input (i + sh*m, j + sw*n).
        placed = lax.pad(jnp.where(first == k, g, zero), zero,
                         ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                          (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
        grad = placed if grad is None else grad + placed
    return (grad[:, pt:pt + shape[1], pl:pl + shape[2]],)


_max_pool_taps.defvjp(_max_pool_taps_fwd, _max_pool_taps_bwd)


def _shortcut(block, x, out_features: int):
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    x = block.conv(out_features, (1, 1), (block.strides, block.strides),
                   name='downsample_conv')(x)
    return block.norm(name='downsample_bn')(x)


class BasicBlock(nn.Module):
    features: int
    strides: int
    conv: Any
    norm: Any
    expansion = 1

    @nn.compact
    def __call__(self, x):
        s = (self.strides, self.strides)
        y = self.conv(self.features, (3, 3), s, torch_pad(3), name='conv1')(x)
        y = nn.relu(self.norm(name='bn1')(y))
        y = self.conv(self.features, (3, 3), padding=torch_pad(3), name='conv2')(y)
        y = self.norm(name='bn2')(y)
        return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
    features: int
    strides: int
    conv: Any
    norm: Any
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
        y = self.norm(name='bn3')(y)
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
    conv_impl: str = 'auto'  # 'auto' | 'xla' | 'matmul', see the module docstring

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init,
                       dtype=self.dtype, param_dtype=jnp.float32,
                       conv_general_dilated=partial(conv_general_dilated, impl=self.conv_impl))
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
            x = max_pool(x, (3, 3), (2, 2), torch_pad(3), self.conv_impl)  # -inf padding, like torch

        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = block_cls(self.width * 2**i, strides, conv, norm,
                              name=f'layer{i + 1}_{j}')(x)

        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        if self.num_classes is not None:
            x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init,
                         bias_init=uniform_bias_init(x.shape[-1]), name='fc')(x)
        return x


ARCHS = {
    'resnet18': ((2, 2, 2, 2), 'basic'),
    'resnet50': ((3, 4, 6, 3), 'bottleneck'),
}


def feature_dim(arch: str, width: int = 64) -> int:
    """Size of the pooled features of `arch` with base `width` (512 / 2048 at 64)."""
    if arch not in ARCHS:
        raise ValueError(f'unknown backbone {arch!r}; valid names: {sorted(ARCHS)}')
    return width * 8 * BLOCKS[ARCHS[arch][1]].expansion


def resnet18(**kw) -> ResNet:
    return ResNet(stage_sizes=ARCHS['resnet18'][0], block='basic', **kw)


def resnet50(**kw) -> ResNet:
    return ResNet(stage_sizes=ARCHS['resnet50'][0], block='bottleneck', **kw)


BACKBONES = {'resnet18': resnet18, 'resnet50': resnet50}


def get_backbone(name: str, **kw) -> ResNet:
    if name not in BACKBONES:
        raise ValueError(f'unknown backbone {name!r}; valid names: {sorted(BACKBONES)}')
    return BACKBONES[name](**kw)
