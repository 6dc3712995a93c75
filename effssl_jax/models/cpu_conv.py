"""Convolution and max-pool as im2col matmuls, the workaround for slow XLA:CPU convolutions.

``conv_impl`` picks how a model's convolutions and max-pools are computed (the parameters
are the same ``nn.Conv`` ones in every case):

* ``'xla'``: ``lax.conv_general_dilated`` and ``nn.max_pool``.
* ``'matmul'``: im2col -- the strided, shifted views ("taps") of the input concatenated
  on the channel axis and one matmul with the reshaped kernel -- and a max-pool built
  from the same views. Autodiff turns both into matmuls / elementwise ops.
* ``'auto'`` (default): on CPU, ``'matmul'`` where XLA:CPU's convolution is slow and
  ``'xla'`` elsewhere (see ``_cpu_prefers_matmul``); ``'xla'`` on GPU/TPU. Decided at
  trace time from ``jax.default_backend()`` and static shapes.

Why: XLA:CPU's algebraic simplifier swaps the operands of a convolution whose input map
is smaller than its kernel (a 3x3 conv on a 2x2 map, or the input-gradient of a stride-2
conv with a 2x2 output) into a window-reversed convolution that its library kernels
(YNNPACK/Eigen) do not take, so it runs as a slow naive loop. Strided and 1x1 convs are
also faster as matmuls, and the max-pool's masks beat ``select_and_scatter`` (the
gradient of ``nn.max_pool``). Which of XLA:CPU's library kernels runs the convs left
on XLA is set by ``effssl_jax/cpu_flags.py``.

A model uses this module through ``conv_general_dilated_for(impl)`` (for
``nn.Conv(conv_general_dilated=...)``) and ``max_pool_for(impl)``.
"""

from functools import partial, reduce

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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
    """Where the matmul beats XLA:CPU's conv (fwd+bwd, ResNet shapes): the 'auto' rule.

    3x3 stride 1 on maps >= 4x4: XLA's conv. Stride 2, 1x1, and anything on a 2x2/1x1
    map: the matmul. The stem (3 input channels) stays on XLA: its im2col buffer is big
    and its matmul narrow.
    """
    (_, h, w, cin), (kh, kw) = x_shape, kernel_shape[:2]
    if cin < 8:
        return False
    return kh * kw == 1 or max(strides) > 1 or h * w < 16


def _check_impl(impl: str):
    if impl not in CONV_IMPLS:
        raise ValueError(f'unknown conv_impl {impl!r}; valid: {CONV_IMPLS}')


def _use_matmul(impl: str, cpu_prefers_matmul: bool) -> bool:
    _check_impl(impl)
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


def conv_general_dilated_for(impl: str):
    """The ``conv_general_dilated`` that ``nn.Conv`` should call under ``conv_impl=impl``."""
    _check_impl(impl)
    return partial(conv_general_dilated, impl=impl)


def max_pool_for(impl: str):
    """``max_pool(x, window, strides, padding)`` under ``conv_impl=impl``."""
    _check_impl(impl)
    return partial(max_pool, impl=impl)
