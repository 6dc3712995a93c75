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
checks each op against ``torchvision.transforms.functional``). dm-pix supplies
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


def _lerp(lo, hi, u):
    return lo + (hi - lo) * u


# ----------------------------------------------------------------------------
# Colour ops on float [H, W, 3] images in [0, 1], clipped after each op as
# torchvision does for float images.
# ----------------------------------------------------------------------------

def _blend(image, other, factor):
    return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def rgb_to_grayscale(image):
    """Luma, tiled back to 3 channels (torchvision ``rgb_to_grayscale(img, 3)``)."""
    return pix.rgb_to_grayscale(image, keep_dims=True)


def adjust_brightness(image, factor):
    """Multiplicative brightness (dm-pix's ``adjust_brightness`` is additive)."""
    return _blend(image, 0.0, factor)


def adjust_contrast(image, factor):
    """Blend with the mean gray level (dm-pix uses per-channel means)."""
    mean = jnp.mean(pix.rgb_to_grayscale(image), axis=(-3, -2, -1), keepdims=True)
    return _blend(image, mean, factor)


def adjust_saturation(image, factor):
    """Blend with the grayscale image (dm-pix scales S in HSV space instead)."""
    return _blend(image, pix.rgb_to_grayscale(image), factor)


def adjust_hue(image, delta):
    """Rotate hue by ``delta`` turns (|delta| <= 0.5) through HSV."""
    shifted = jnp.clip(pix.adjust_hue(image, delta), 0.0, 1.0)
    # The HSV round trip is not bit-exact; keep delta == 0 an exact identity.
    return jnp.where(delta == 0, image, shifted)


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


def _apply_jitter(image, factors, hue, order, hue_slot):
    """Brightness/contrast/saturation (0/1/2) in ``order``, hue after ``hue_slot`` of them.

    All three blend ops are ``_blend(x, other, f)`` with other = 0, the mean gray
    level or the gray image, so one step with a selected ``other`` covers them.
    A ``lax.switch`` over the 4 ops would, under vmap, evaluate every branch at
    every step (4 HSV round trips); here the blends run in two masked passes
    around a single hue op.
    """
    def blend_pass(x, active):
        for t in range(3):
            op = order[t]
            gray = pix.rgb_to_grayscale(x)
            other = jnp.where(op == 0, 0.0, jnp.where(op == 1, jnp.mean(gray), gray))
            x = jnp.where(active[t], _blend(x, other, factors[op]), x)
        return x

    before = jnp.arange(3) < hue_slot
    image = blend_pass(image, before)
    image = adjust_hue(image, hue)
    return blend_pass(image, ~before)


def color_jitter(key, image, magnitude, cfg: ViewConfig = ViewConfig()):
    """torchvision ColorJitter (random op order) at the given magnitude."""
    return _apply_jitter(image, *_jitter_params(key, magnitude, cfg))


def gaussian_blur(image, sigma, kernel_size: int):
    """torchvision ``gaussian_blur`` on [H, W, C]: static odd kernel size, reflect padding.

    Written as sums of shifted slices rather than with ``pix.gaussian_blur``
    (same kernel, but zero padding): with a per-sample sigma under vmap its
    depthwise conv becomes a grouped conv with a group per sample and channel,
    which was ~7x slower on CPU than these fused multiply-adds.
    """
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


# ----------------------------------------------------------------------------
# The full view pipeline.
# ----------------------------------------------------------------------------

def augment_image(key, image, size, out_size: int, magnitude, cfg: ViewConfig = ViewConfig()):
    """One augmented view of a uint8 [H, W, 3] image whose valid part is its top-left `size`
    (height, width) -> float32 [out, out, 3] in [0, 1].

    Stages whose probability is 0 are left out at trace time (cfg is static).
    """
    k_crop, k_jitter, k_misc = jax.random.split(key, 3)
    # Coins for jitter / gray / blur / solarize / flip, then the blur's sigma.
    u = jax.random.uniform(k_misc, (6,))

    x = random_resized_crop(k_crop, image, size, out_size, cfg.crop_scale, cfg.crop_ratio)
    if cfg.jitter_prob > 0:
        x = jnp.where(u[0] < cfg.jitter_prob, color_jitter(k_jitter, x, magnitude, cfg), x)
    if cfg.gray_prob > 0:
        x = jnp.where(u[1] < cfg.gray_prob, rgb_to_grayscale(x), x)
    if cfg.blur_prob > 0:
        sigma = _lerp(*cfg.blur_sigma, u[5]) * (out_size / 224)
        x = jnp.where(u[2] < cfg.blur_prob,
                      gaussian_blur(x, sigma, blur_kernel_size(out_size, cfg.blur_sigma[1])), x)
    if cfg.solarize_prob > 0:
        x = jnp.where(u[3] < cfg.solarize_prob, pix.solarize(x, 0.5), x)
    if cfg.flip_prob > 0:
        x = jnp.where(u[4] < cfg.flip_prob, pix.flip_left_right(x), x)
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
    View v uses view_configs[v % 2] and its own key fold_in(rng, v), so Hard Augment can render
    one chosen view again at another size (hard_augment.render_selected)."""
    views = [augment_batch(jax.random.fold_in(rng, v), images, size, magnitude,
                           view_configs[v % 2]) for v in range(n)]
    return normalize(jnp.stack(views)).astype(dtype)
