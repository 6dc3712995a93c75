"""SimCLR-style view augmentations that run on the accelerator, inside a jitted step.

The host ships whole images in a fixed canvas (``data/canvas.py``: uint8 ``[B, C, C, 3]`` and
each image's valid height and width); everything below is pure JAX with explicit PRNG keys, so
one compiled step covers a whole batch:

* the output resolution ``out_size`` is a static Python int (one compile each),
* the augmentation ``magnitude`` is a traced float (changes without recompiling),
* every random choice is branch-free (``jnp.where``), so the same code runs
  eagerly, under ``jax.jit`` and under ``jax.vmap``.

The pipeline follows torchvision's SimCLR/SimSiam/BYOL order::

    RandomResizedCrop -> RandomApply(ColorJitter) -> RandomGrayscale
    -> RandomApply(GaussianBlur) -> RandomApply(Solarize) -> RandomHorizontalFlip

and reproduces torchvision's formulas on float images (``tests/test_augment.py``
checks each op against ``torchvision.transforms.functional``). ``ViewConfig.colour_rounding``
= ``"uint8"`` instead rounds the view to 8 bits after the crop and after every colour op, as
torchvision does on uint8 tensors (``tests/test_colour_rounding.py``; see ``COLOUR_ROUNDINGS``).
dm-pix supplies
the ops whose formulas already match torchvision: grayscale (0.2989, 0.587,
0.114), hue (HSV round trip), solarize and flip. Brightness, contrast and
saturation are written here because dm-pix follows TensorFlow (additive
brightness, per-channel contrast mean, saturation scaled in HSV space).

Each sample draws a handful of uniform vectors rather than one key per random
number: every ``jax.random`` call inlines a threefry hash, and a dozen of them
per sample made the step several times slower to compile.
"""
from __future__ import annotations

import dataclasses
import math

import dm_pix as pix
import jax
import jax.numpy as jnp

from effssl_jax.data.canvas import Images, as_images

STANDARD_MAGNITUDE = 5.0  # magnitude at which the jitter strengths equal ViewConfig's
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How a view's pixels are kept between the ops (ViewConfig.colour_rounding):
#   "float": in float, clipped to [0, 1] after each op, as torchvision computes on float tensors.
#   "uint8": as torchvision.transforms.v2.functional computes on uint8 tensors: the view is
#     rounded to a level k / 255 after the crop-resize and after each of brightness, contrast,
#     saturation, hue, grayscale, blur and solarize, each the way torchvision's uint8 kernel
#     rounds (see the ops below): the blends and grayscale truncate, the hue rotation maps y to
#     floor(255.999 y), the crop-resize rounds to the nearest level after each of its two
#     passes (halves up) and the blur to the nearest level (halves to even).
#   PIL, which the official SimSiam/MoCo/BYOL/DINO pipelines use, also keeps 8 bits between ops
#   and truncates its blends (ImageEnhance -> Image.blend), but its luma (grayscale, and the gray
#   that saturation and contrast blend with) is rounded and uses integer weights 299/587/114,
#   contrast blends with the mean luma rounded to an integer, hue is rotated in 8-bit HSV (hue
#   quantised to 1/256 turn), and ImageFilter.GaussianBlur is an iterated box filter. "uint8"
#   therefore reproduces PIL's precision (8 bits after each op) but not its every rounding.
COLOUR_ROUNDINGS = ("float", "uint8")


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Static (hashable) description of one view's augmentation pipeline.

    The defaults are SimSiam's recipe, which is also the single setting of the paper under
    reproduction; each method's own recipe and the paper's are in ``methods/recipes.py``.
    """
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    # Colour-jitter strengths at magnitude == STANDARD_MAGNITUDE (scaled linearly).
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    # Sigma range in pixels of a 224-px image; rescaled to the output resolution.
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    # "float" or "uint8": how the pixels are rounded between ops (COLOUR_ROUNDINGS).
    colour_rounding: str = "float"

    def __post_init__(self):
        if self.colour_rounding not in COLOUR_ROUNDINGS:
            raise ValueError(f"colour_rounding={self.colour_rounding!r} is unknown; valid: "
                             f"{', '.join(COLOUR_ROUNDINGS)}")


def _lerp(lo, hi, u):
    return lo + (hi - lo) * u


# ----------------------------------------------------------------------------
# Colour ops on [H, W, 3] images in [0, 1]. rounding="float" (the default): float, clipped
# after each op as torchvision does for float images. rounding="uint8": the input is taken to lie
# on the 1/255 grid, and each op returns the level that torchvision's kernel returns for a uint8
# tensor, divided by 255 (COLOUR_ROUNDINGS). The uint8 variants compute on the levels 0..255
# (exact integers in float) in torchvision's order of float32 operations, so that their floors
# see the numbers torchvision's floors see (tests/test_colour_rounding.py).
# ----------------------------------------------------------------------------

def _levels(image):
    """[0, 1] image -> the nearest uint8 levels 0..255, as exact integers in float."""
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0)


def _from_levels(levels):
    return levels / 255.0


def quantize(image):
    """Round a [0, 1] image to the nearest multiple of 1/255."""
    return _from_levels(_levels(image))


def _exact(product):
    """A float32 product as torchvision stores it, rounded: XLA (LLVM) may otherwise fuse the
    product into the add that follows as one fused multiply-add, rounding once where torchvision
    rounds twice, and the uint8 floors make that a level now and then. A select on the product
    stops the fusion (it is the identity: no NaN here)."""
    return jnp.where(product == product, product, 0.0)


def _split(c):
    """c = hi + lo with hi the 12 leading bits of c's significand: hi and lo times an 8-bit
    level are then exact products in float32."""
    mantissa, exponent = jnp.frexp(c)
    hi = jnp.ldexp(jnp.round(mantissa * 4096.0) / 4096.0, exponent)
    return hi, c - hi


def _add_product(p, c, level):
    """p + c * level rounded once, as a fused multiply-add: what torchvision's CPU kernels'
    vectorised ``add_(level, alpha=c)`` computes (in the luma and in ``_blend``). c is split
    (_split) so that both partial products with an 8-bit integer `level` are exact, and they are
    added with an error-free sum (TwoSum), whose rounding is the only one. (For a `level` that
    is not an integer, contrast's mean gray, the products round, far below a level.)"""
    hi, lo = _split(c)
    a, b = hi * level, lo * level
    s = p + a
    t = s - p
    err = (p - (s - t)) + (a - t)  # s + err == p + a exactly
    return s + (err + b)


def _luma_levels(levels):
    """torchvision's luma of uint8 levels, truncated to a level: rgb_to_grayscale's
    ``.to(uint8)``, and the ``.floor_()`` of the gray that adjust_contrast and
    adjust_saturation blend with. torchvision computes r * 0.2989, then adds g * 0.587 and
    b * 0.114 each in one fused multiply-add; where the luma is an integer in decimal (a few
    colours in ten thousand) the truncation depends on that order. [H, W, 1]."""
    def weight(w):
        return jnp.asarray(w, levels.dtype)
    r, g, b = levels[..., 0:1], levels[..., 1:2], levels[..., 2:3]
    luma = _add_product(_exact(r * weight(0.2989)), weight(0.587), g)
    return jnp.floor(_add_product(luma, weight(0.114), b))


def _blend(image, other, factor):
    return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _blend_levels(levels, other, factor):
    """torchvision's ``_blend`` on uint8 levels: f * k rounded to float32, plus (1 - f) * other
    in one fused multiply-add (_add_product), clamped to [0, 255] and truncated by
    ``.to(uint8)`` (PIL's Image.blend truncates too). adjust_brightness's
    ``mul(f).clamp_(0, 255)`` is the case other == 0.

    The single rounding matters because of the truncation: where a blend is an integer (a
    channel equal to the gray it is blended with, or a round factor), a product and a sum
    rounded separately can land just below it, one level lower."""
    p = _exact(factor * levels)
    return jnp.floor(jnp.clip(_add_product(p, 1.0 - factor, other), 0.0, 255.0))


def rgb_to_grayscale(image, rounding: str = "float"):
    """Luma, tiled back to 3 channels (torchvision ``rgb_to_grayscale(img, 3)``)."""
    if rounding == "uint8":
        return _from_levels(jnp.broadcast_to(_luma_levels(_levels(image)), image.shape))
    return pix.rgb_to_grayscale(image, keep_dims=True)


def adjust_brightness(image, factor, rounding: str = "float"):
    """Multiplicative brightness (dm-pix's ``adjust_brightness`` is additive)."""
    if rounding == "uint8":
        return _from_levels(_blend_levels(_levels(image), 0.0, factor))
    return _blend(image, 0.0, factor)


def adjust_contrast(image, factor, rounding: str = "float"):
    """Blend with the mean gray level (dm-pix uses per-channel means). In uint8 the mean is that
    of the truncated luma, itself not rounded (torchvision; PIL rounds it to a level)."""
    if rounding == "uint8":
        levels = _levels(image)
        return _from_levels(_blend_levels(levels, jnp.mean(_luma_levels(levels)), factor))
    mean = jnp.mean(pix.rgb_to_grayscale(image), axis=(-3, -2, -1), keepdims=True)
    return _blend(image, mean, factor)


def adjust_saturation(image, factor, rounding: str = "float"):
    """Blend with the grayscale image (dm-pix scales S in HSV space instead)."""
    if rounding == "uint8":
        levels = _levels(image)
        return _from_levels(_blend_levels(levels, _luma_levels(levels), factor))
    return _blend(image, pix.rgb_to_grayscale(image), factor)


# Which of (v, p, q, t) each of r, g, b is in each sixth of the hue circle (torchvision).
_HSV_SELECT = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def _hue_levels(levels, delta):
    """torchvision's ``adjust_hue`` of uint8 levels, in its float32 operations: k * (1 / 255),
    its HSV round trip (``_rgb_to_hsv``, ``_hsv_to_rgb``, not dm-pix's, whose other formulas put
    a value a float32 rounding to the other side of a level now and then), then
    ``to_dtype(uint8, scale=True)``: floor(255.999 y), which truncates dark values and rounds
    bright ones up rather than rounding to the nearest level. Each product that feeds an add
    is _exact, as torchvision's are rounded."""
    x = _exact(levels * (1.0 / 255.0))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    maxc, minc = jnp.max(x, axis=-1), jnp.min(x, axis=-1)
    flat = maxc == minc
    chroma = maxc - minc
    s = chroma / jnp.where(flat, 1.0, maxc)
    divisor = jnp.where(flat, 1.0, chroma)
    rc, gc, bc = ((maxc - c) / divisor for c in (r, g, b))
    h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, (rc + 2.0) - bc, (gc + 4.0) - rc))
    h = jnp.fmod(_exact(h * (1.0 / 6.0)) + 1.0, 1.0)
    h = jnp.remainder(h + delta, 1.0)

    h6 = _exact(h * 6.0)
    sector = jnp.floor(h6)
    sxf = _exact(s * (h6 - sector))
    one_minus_s = 1.0 - s
    q = jnp.clip((1.0 - sxf) * maxc, 0.0, 1.0)
    t = jnp.clip((sxf + one_minus_s) * maxc, 0.0, 1.0)
    p = jnp.clip(one_minus_s * maxc, 0.0, 1.0)
    vpqt = (maxc, p, q, t)
    sector = sector.astype(jnp.int32) % 6
    # torchvision gathers from the stacked (v, p, q, t); selects are the same, elementwise.
    rgb = [sum(jnp.where(sector == i, vpqt[row[i]], 0.0) for i in range(6)) for row in _HSV_SELECT]
    return jnp.floor(jnp.stack(rgb, axis=-1) * 255.999)


def adjust_hue(image, delta, rounding: str = "float"):
    """Rotate hue by ``delta`` turns (|delta| <= 0.5) through HSV (_hue_levels in uint8)."""
    if rounding == "uint8":
        image = quantize(image)
        shifted = _from_levels(_hue_levels(_levels(image), delta))
    else:
        shifted = jnp.clip(pix.adjust_hue(image, delta), 0.0, 1.0)
    # The float HSV round trip is not bit-exact; keep delta == 0 an exact identity (in uint8 the
    # round trip at delta == 0 returns every level unchanged, as torchvision's does).
    return jnp.where(delta == 0, image, shifted)


def solarize(image, rounding: str = "float"):
    """Invert the pixels >= 0.5: dm-pix's ``solarize(image, 0.5)``; in uint8 the levels >= 128,
    as torchvision's ``solarize(uint8, 128)`` and PIL's ``ImageOps.solarize(img, 128)`` (BYOL)."""
    if rounding == "uint8":
        return quantize(pix.solarize(quantize(image), 0.5))
    return pix.solarize(image, 0.5)


def _jitter_params(key, magnitude, cfg: ViewConfig):
    """Sample ColorJitter's parameters, strengths scaled by magnitude / STANDARD_MAGNITUDE.

    torchvision runs its 4 ops in a uniformly random order. A uniform
    permutation of 4 is the same as a uniform order of the 3 blend ops
    (brightness, contrast, saturation) and an independent uniform slot for hue
    (0..3 blends before it); this is sampled that way (see ``_apply_jitter``).
    Returns (factors [3], hue delta, blend order [3], hue slot).
    """
    u = jax.random.uniform(key, (8,))
    m = magnitude / STANDARD_MAGNITUDE
    s = jnp.array([cfg.brightness, cfg.contrast, cfg.saturation]) * m
    factors = _lerp(jnp.maximum(0.0, 1.0 - s), 1.0 + s, u[0:3])
    h = jnp.minimum(cfg.hue * m, 0.5)
    hue = _lerp(-h, h, u[3])
    order = jnp.argsort(u[4:7])
    hue_slot = jnp.minimum(jnp.floor(4 * u[7]), 3).astype(jnp.int32)
    return factors, hue, order, hue_slot


def _apply_jitter(image, factors, hue, order, hue_slot, rounding: str = "float"):
    """Brightness/contrast/saturation (0/1/2) in ``order``, hue after ``hue_slot`` of them.

    All three blend ops are ``_blend(x, other, f)`` with other = 0, the mean gray
    level or the gray image, so one step with a selected ``other`` covers them.
    A ``lax.switch`` over the 4 ops would, under vmap, evaluate every branch at
    every step (4 HSV round trips); here the blends run in two masked passes
    around a single hue op. ``rounding``: COLOUR_ROUNDINGS.
    """
    def blend_pass(x, active):
        for t in range(3):
            op = order[t]
            if rounding == "uint8":
                levels = _levels(x)
                gray = _luma_levels(levels)
                other = jnp.where(op == 0, 0.0, jnp.where(op == 1, jnp.mean(gray), gray))
                blended = _from_levels(_blend_levels(levels, other, factors[op]))
            else:
                gray = pix.rgb_to_grayscale(x)
                other = jnp.where(op == 0, 0.0, jnp.where(op == 1, jnp.mean(gray), gray))
                blended = _blend(x, other, factors[op])
            x = jnp.where(active[t], blended, x)
        return x

    before = jnp.arange(3) < hue_slot
    image = blend_pass(image, before)
    image = adjust_hue(image, hue, rounding)
    return blend_pass(image, ~before)


def color_jitter(key, image, magnitude, cfg: ViewConfig = ViewConfig()):
    """torchvision ColorJitter (random op order) at the given magnitude."""
    return _apply_jitter(image, *_jitter_params(key, magnitude, cfg), cfg.colour_rounding)


def gaussian_blur(image, sigma, kernel_size: int, rounding: str = "float"):
    """torchvision ``gaussian_blur`` on [H, W, C]: static odd kernel size, reflect padding. In
    uint8 the blurred levels are rounded to the nearest (torchvision's ``.round_()``, half to
    even, as ``jnp.round``).

    Written as sums of shifted slices rather than with ``pix.gaussian_blur``
    (same kernel, but zero padding): with a per-sample sigma under vmap its
    depthwise conv becomes a grouped conv with a group per sample and channel,
    which was ~7x slower on CPU than these fused multiply-adds.
    """
    if rounding == "uint8":
        return _from_levels(jnp.round(gaussian_blur(_levels(image), sigma, kernel_size)))
    radius = kernel_size // 2
    if radius == 0:
        return image
    taps = jnp.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = jnp.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel)
    h, w = image.shape[0], image.shape[1]
    x = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    x = sum(kernel[i] * x[i:i + h] for i in range(kernel_size))
    return sum(kernel[i] * x[:, i:i + w] for i in range(kernel_size))


def blur_kernel_size(out_size: int, sigma_max: float = 2.0) -> int:
    """Static odd kernel size of the blur at `out_size`, whose sigma reaches `sigma_max` pixels of
    a 224 px image (augment_image scales it by out_size / 224): 2 r + 1 taps with
    r = max(out_size // 20, ceil(3 s), 1), s = sigma_max * out_size / 224.

    out_size // 20 is SimCLR's and BYOL's kernel of about a tenth of the side (simclr
    data_util.py: kernel_size=height//10; byol augmentations.py: image size / blur_divider 10),
    23 taps at 224 px. It grows with the side as the scaled sigma does and spans 5.6 sigma_max at
    the default sigma range, so every side >= 20 px keeps that kernel. Below 20 px it rounds to
    no tap around the centre, which left small views unblurred whatever their sigma; the 3 s
    term (99.7% of the Gaussian's mass) keeps the kernel wide enough for the largest sigma at any
    side, and for sigma ranges wider than the default. (SimSiam's and MoCo's PIL blur has no
    kernel size: ImageFilter.GaussianBlur(radius=sigma).)
    """
    scaled = sigma_max * out_size / 224
    radius = max(out_size // 20, math.ceil(round(3 * scaled, 9)), 1)
    return 2 * radius + 1


# ----------------------------------------------------------------------------
# Geometry.
# ----------------------------------------------------------------------------

def to_float(image):
    """float32, or float64 under 64-bit JAX (dtype=float64 runs: views then agree across device
    layouts, where float32's codegen for another per-device batch differs by an ulp)."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    if jnp.issubdtype(image.dtype, jnp.integer):
        return image.astype(dtype) / 255.0
    return image.astype(dtype)


def crop_box(key, height, width, scale, ratio, attempts: int = 10):
    """``torchvision.transforms.RandomResizedCrop.get_params`` for an image of `height` x `width`
    valid pixels (traced integers: each image of a canvas has its own).

    torchvision draws up to 10 (area, log-uniform aspect) candidates and keeps the first that
    fits; here all 10 are drawn at once and the first valid one is selected, with the same
    centre-crop fallback (its aspect ratio clamped into `ratio`). Returns float32 scalars
    (top, left, h, w), all integer-valued.
    """
    height, width = jnp.asarray(height, jnp.float32), jnp.asarray(width, jnp.float32)
    u = jax.random.uniform(key, (2 * attempts + 2,))
    target_area = height * width * _lerp(scale[0], scale[1], u[:attempts])
    aspect = jnp.exp(_lerp(math.log(ratio[0]), math.log(ratio[1]), u[attempts:2 * attempts]))
    w = jnp.round(jnp.sqrt(target_area * aspect))
    h = jnp.round(jnp.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(valid)

    # Fallback: the largest centred crop whose aspect ratio lies within `ratio`.
    in_ratio = width / height
    lo, hi = min(ratio), max(ratio)
    fw = jnp.where(in_ratio > hi, jnp.round(height * hi), width)
    fh = jnp.where(in_ratio < lo, jnp.round(width / lo), height)

    found = valid.any()
    h = jnp.where(found, h[first], fh)
    w = jnp.where(found, w[first], fw)
    # Integer offsets uniform in [0, H - h] and [0, W - w], like torch.randint.
    top = jnp.where(found, jnp.floor(u[-2] * (height - h + 1)), jnp.floor((height - fh) / 2))
    left = jnp.where(found, jnp.floor(u[-1] * (width - w + 1)), jnp.floor((width - fw) / 2))
    return top, left, h, w


def resize_weights(start, length, out_size: int, in_size: int):
    """[out_size, in_size] weights that resize input pixels [start, start + length) of an axis to
    `out_size` pixels, as torch's antialiased bilinear resize does (the kernel behind
    torchvision's ``resize(..., antialias=True)``, after PIL): a triangle filter widened by the
    scale when shrinking, centred on each output pixel, cut at the crop's edges and renormalised.
    Pixels outside the crop (the rest of the image, the canvas's padding) get no weight."""
    scale = length / out_size
    support = jnp.maximum(scale, 1.0)
    centre = start + (jnp.arange(out_size) + 0.5) * scale
    j = jnp.arange(in_size) + 0.5
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(j[None, :] - centre[:, None]) / support)
    inside = (j > start) & (j < start + length)
    weights = jnp.where(inside[None, :], weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def resized_crop(image, top, left, h, w, out_size: int):
    """Box (top, left, h, w) of a [H, W, C] image resized to out_size^2: torchvision's
    ``resized_crop(..., antialias=True)`` on a float image, as two matrix products
    (resize_weights), so that the box can move inside a fixed canvas. uint8 or float in [0, 1]
    -> float in [0, 1]."""
    x = to_float(image)
    rows = resize_weights(top, h, out_size, x.shape[0]).astype(x.dtype)
    cols = resize_weights(left, w, out_size, x.shape[1]).astype(x.dtype)
    x = jnp.einsum("ih,hwc->iwc", rows, x)
    return jnp.clip(jnp.einsum("jw,iwc->ijc", cols, x), 0.0, 1.0)


def random_resized_crop(key, image, size, out_size: int, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision RandomResizedCrop of one image: `image` [H, W, 3] (uint8, or float in [0, 1])
    whose valid part is the top-left `size` (height, width) -> float [out, out, 3] in [0, 1]."""
    top, left, h, w = crop_box(key, size[0], size[1], scale, ratio)
    return resized_crop(image, top, left, h, w, out_size)


def _round_half_up(levels):
    """Round to the nearest level, halves up, as torchvision's (and PIL's) fixed-point resize
    does: the float value is first snapped to 1/1024 of a level, so that an exact half (frequent
    where the scale is a simple ratio) is not decided by the float error of the weights."""
    return jnp.floor(jnp.round(levels * 1024.0) / 1024.0 + 0.5)


def resized_crop_uint8(image, top, left, h, w, out_size: int, flip=False):
    """resized_crop as torchvision resizes a uint8 tensor (its native uint8 kernel, which
    follows PIL's resample): the box resampled horizontally and rounded to a level
    (_round_half_up), then vertically and rounded again. The weights are resize_weights';
    torchvision's are fixed-point (about 15 bits; PIL's 22), which moves a level on the few
    pixels whose value lies within that precision of a half level. -> float [out, out, 3] on
    the 1/255 grid.

    `flip` (a traced bool) mirrors the crop left to right, by reversing the horizontal weights.
    augment_image flips uint8 views here rather than last: a flip commutes with every later op
    on levels (pixelwise ops, contrast's mean of integers, the symmetric blur), and a last
    select between the view and its mirror had XLA compute the whole rounded colour chain once
    for each (most of the uint8 pipeline's device time on CPU)."""
    x = _levels(to_float(image))
    cols = resize_weights(left, w, out_size, x.shape[1]).astype(x.dtype)
    cols = jnp.where(flip, cols[::-1], cols)
    x = _round_half_up(jnp.einsum("jw,hwc->hjc", cols, x, precision=jax.lax.Precision.HIGHEST))
    rows = resize_weights(top, h, out_size, x.shape[0]).astype(x.dtype)
    x = jnp.einsum("ih,hjc->ijc", rows, x, precision=jax.lax.Precision.HIGHEST)
    return _from_levels(jnp.clip(_round_half_up(x), 0.0, 255.0))


# ----------------------------------------------------------------------------
# The full view pipeline.
# ----------------------------------------------------------------------------

def augment_image(key, image, size, out_size: int, magnitude, cfg: ViewConfig = ViewConfig()):
    """One augmented view of a uint8 [H, W, 3] image whose valid part is its top-left `size`
    (height, width) -> float32 [out, out, 3] in [0, 1].

    Stages whose probability is 0 are left out at trace time (cfg is static). With
    cfg.colour_rounding == "uint8" the crop and every colour op round to 8 bits as torchvision's
    uint8 kernels do (COLOUR_ROUNDINGS); the result is then a multiple of 1/255.
    """
    k_crop, k_jitter, k_misc = jax.random.split(key, 3)
    # Coins for jitter / gray / blur / solarize / flip, then the blur's sigma.
    u = jax.random.uniform(k_misc, (6,))
    rounding = cfg.colour_rounding

    flip = cfg.flip_prob > 0 and u[4] < cfg.flip_prob
    if rounding == "uint8":
        box = crop_box(k_crop, size[0], size[1], cfg.crop_scale, cfg.crop_ratio)
        x = resized_crop_uint8(image, *box, out_size, flip)  # flipped here (see there)
    else:
        x = random_resized_crop(k_crop, image, size, out_size, cfg.crop_scale, cfg.crop_ratio)
    if cfg.jitter_prob > 0:
        x = jnp.where(u[0] < cfg.jitter_prob, color_jitter(k_jitter, x, magnitude, cfg), x)
    if cfg.gray_prob > 0:
        x = jnp.where(u[1] < cfg.gray_prob, rgb_to_grayscale(x, rounding), x)
    if cfg.blur_prob > 0:
        sigma = _lerp(*cfg.blur_sigma, u[5]) * (out_size / 224)
        kernel_size = blur_kernel_size(out_size, cfg.blur_sigma[1])
        x = jnp.where(u[2] < cfg.blur_prob, gaussian_blur(x, sigma, kernel_size, rounding), x)
    if cfg.solarize_prob > 0:
        x = jnp.where(u[3] < cfg.solarize_prob, solarize(x, rounding), x)
    if cfg.flip_prob > 0 and rounding == "float":
        x = jnp.where(flip, pix.flip_left_right(x), x)
    return x


def augment_batch(key, images: Images, out_size: int, magnitude, cfg: ViewConfig = ViewConfig()):
    """augment_image over a batch of whole images (data/canvas.py), one key per sample.

    Jit with ``static_argnames=("out_size", "cfg")``; magnitude stays traced.
    """
    return augment_with_keys(view_keys(key, len(images)), images, out_size, magnitude, cfg)


def view_keys(key, batch_size: int):
    """The per-sample keys augment_batch(key, ...) uses."""
    return jax.random.split(key, batch_size)


def augment_with_keys(keys, images: Images, out_size: int, magnitude,
                      cfg: ViewConfig = ViewConfig()):
    """augment_image of each sample with its own key: keys [B], images a batch of B (or a uint8
    array [B, H, W, 3] of images that fill it)."""
    images = as_images(images)
    return jax.vmap(lambda k, im, hw: augment_image(k, im, hw, out_size, magnitude, cfg))(
        keys, images.pixels, images.sizes)


def normalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(x - mean) / std over the trailing channel axis."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def render_views(rng, images: Images, magnitude, size: int, view_configs, n: int, dtype):
    """n augmented, normalised views of a batch of whole images at `size`: [n, B, size, size, 3].
    View v uses view_configs[v % 2] and its own key fold_in(rng, v): a view is a function of
    (rng, v) alone, whatever n is."""
    views = [augment_batch(jax.random.fold_in(rng, v), images, size, magnitude,
                           view_configs[v % 2]) for v in range(n)]
    return normalize(jnp.stack(views)).astype(dtype)
