"""Tests for effssl_jax.augment: shapes, randomness, jit/vmap equivalence, crop
statistics and op-by-op parity with torchvision.transforms.functional."""
import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effssl_jax import augment as A

B, H, W = 8, 40, 40
OUT = 24
FULL = A.ViewConfig(solarize_prob=0.5)  # every stage switched on
JITTER_ONLY = A.ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
                           jitter_prob=1.0, gray_prob=0.0, blur_prob=0.0)


def _images(seed=0, b=B, h=H, w=W):
    """Smooth colourful images plus noise, so crops, flips and colours all show."""
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase = rng.rand(b, 1, 1, 3) * 6.28
    freq = 1 + 3 * rng.rand(b, 1, 1, 3)
    base = 0.5 + 0.4 * np.sin(freq * (2 * xx + yy)[None, ..., None] * 3 + phase)
    noise = 0.1 * rng.randn(b, h, w, 3)
    return np.clip(255 * (base + noise), 0, 255).astype(np.uint8)


IMAGES = _images()
TRACES = collections.Counter()


def _batch(key, images, out_size, magnitude, cfg):
    TRACES[(images.shape, out_size, cfg)] += 1
    return A.augment_batch(key, images, out_size, magnitude, cfg)


aug_batch = jax.jit(_batch, static_argnames=("out_size", "cfg"))
aug_image = jax.jit(A.augment_image, static_argnames=("out_size", "cfg"))


def _key(i):
    return jax.random.key(i)


def _resize(images, out_size):
    """Each whole image resized to out_size^2 (torchvision's antialiased resize)."""
    return jax.vmap(lambda x: A.resized_crop(x, 0, 0, x.shape[0], x.shape[1], out_size))(
        jnp.asarray(images))


# ----------------------------------------------------------------------------
# Shapes, ranges, randomness, compilation.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("out_size", [16, OUT, 64])  # downsampling ... upsampling (H = 40)
def test_shapes_dtypes_ranges(out_size):
    y = np.asarray(aug_batch(_key(0), IMAGES, out_size, 5.0, FULL))
    assert y.shape == (B, out_size, out_size, 3) and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert y.std() > 0.05  # not collapsed to a constant


def test_determinism_and_independence():
    y1 = np.asarray(aug_batch(_key(1), IMAGES, OUT, 5.0, FULL))
    y1b = np.asarray(aug_batch(_key(1), IMAGES, OUT, 5.0, FULL))
    y2 = np.asarray(aug_batch(_key(2), IMAGES, OUT, 5.0, FULL))
    np.testing.assert_array_equal(y1, y1b)
    assert np.abs(y1 - y2).mean() > 0.05

    # The same image in every slot still gets a different view per sample.
    same = np.repeat(IMAGES[:1], B, axis=0)
    y = np.asarray(aug_batch(_key(3), same, OUT, 5.0, FULL))
    for i, j in itertools.combinations(range(B), 2):
        assert np.abs(y[i] - y[j]).mean() > 0.01, (i, j)
    # ... and in particular a different crop.
    keys = jax.random.split(_key(3), B)
    boxes = jax.vmap(lambda k: A.crop_box(k, H, W, (0.2, 1.0), (3 / 4, 4 / 3)))(keys)
    boxes = np.stack(boxes, 1)
    assert len({tuple(b) for b in boxes}) == B


def test_eager_jit_vmap_agree():
    key = _key(4)
    batched = np.asarray(aug_batch(key, IMAGES, OUT, 6.0, FULL))             # jit(vmap)
    keys = jax.random.split(key, B)  # augment_batch's per-sample keys
    for i in range(3):
        single_jit = aug_image(keys[i], IMAGES[i], (H, W), OUT, 6.0, FULL)   # jit, no vmap
        np.testing.assert_allclose(single_jit, batched[i], atol=2e-5)
    eager = A.augment_image(keys[0], IMAGES[0], (H, W), OUT, 6.0, FULL)      # eager, no vmap
    np.testing.assert_allclose(eager, batched[0], atol=2e-5)


def test_magnitude_is_traced_not_static():
    before = TRACES[(IMAGES.shape, OUT, FULL)]
    outs = [np.asarray(aug_batch(_key(5), IMAGES, OUT, m, FULL)) for m in (0.5, 5.0, 12.0)]
    assert TRACES[(IMAGES.shape, OUT, FULL)] - before <= 1  # at most the first call traces
    assert np.abs(outs[0] - outs[2]).mean() > 0.01


def test_random_apply_frequencies():
    # Grayscale happens with p = 0.2 and survives blur/solarize/flip; jitter at
    # magnitude 5 never desaturates fully, so R == G == B flags exactly those views.
    ys = np.concatenate([np.asarray(aug_batch(_key(100 + i), IMAGES, OUT, 5.0, FULL))
                         for i in range(40)])
    gray = np.all(ys[..., :1] == ys, axis=(1, 2, 3))
    assert 0.12 < gray.mean() < 0.28, gray.mean()


def test_flip_only_pipeline_is_a_flipped_resize():
    cfg = A.ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=1.0,
                       jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0)
    y = aug_batch(_key(6), IMAGES, OUT, 5.0, cfg)
    ref = _resize(IMAGES, OUT)[:, :, ::-1]
    np.testing.assert_allclose(y, ref, atol=1e-5)


# ----------------------------------------------------------------------------
# Colour-jitter magnitude.
# ----------------------------------------------------------------------------

def test_jitter_magnitude_zero_is_identity():
    x = A.to_float(jnp.asarray(IMAGES))
    keys = jax.random.split(_key(7), B)
    y = jax.jit(jax.vmap(lambda k, im: A.color_jitter(k, im, 0.0, A.ViewConfig())))(keys, x)
    np.testing.assert_array_equal(y, x)


def test_jitter_magnitude_monotone_through_pipeline():
    plain = np.asarray(_resize(IMAGES, OUT))
    mags = [0.0, 1.0, 2.5, 5.0, 10.0, 15.0]
    change = []
    for m in mags:
        y = np.asarray(aug_batch(_key(8), IMAGES, OUT, m, JITTER_ONLY))
        change.append(np.abs(y - plain).mean())
    assert change[0] < 1e-6, change  # magnitude 0: the pipeline is just the resize
    assert all(a < b for a, b in zip(change, change[1:])), change
    assert change[3] > 0.02, change


# ----------------------------------------------------------------------------
# Crops and resizing.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("out_size", [16, 64])
def test_full_crop_is_plain_antialiased_resize(out_size):
    img = IMAGES[0]
    ref = jax.image.resize(img.astype(np.float32) / 255, (out_size, out_size, 3), "linear",
                           antialias=True)
    for i in range(3):
        y = A.random_resized_crop(_key(i), img, (H, W), out_size, scale=(1.0, 1.0),
                                  ratio=(1.0, 1.0))
        assert y.dtype == jnp.float32
        np.testing.assert_allclose(y, ref, atol=1e-6)


def _sample_boxes(n, h, w, scale, ratio, seed=0):
    keys = jax.random.split(_key(seed), n)
    return [np.asarray(a) for a in
            jax.jit(jax.vmap(lambda k: A.crop_box(k, h, w, scale, ratio)))(keys)]


def test_crop_statistics_square_ratio():
    # ratio (1, 1): every candidate fits, so the area fraction is U(scale).
    top, left, h, w = _sample_boxes(4000, 200, 200, (0.2, 1.0), (1.0, 1.0))
    frac = h * w / 200**2
    assert frac.min() >= 0.2 * 0.98 and frac.max() <= 1.0  # 2% slack: sides are rounded
    assert abs(frac.mean() - 0.6) < 0.015, frac.mean()
    assert abs(np.quantile(frac, 0.25) - 0.4) < 0.03


def test_crop_boxes_valid_default_ratio():
    top, left, h, w = _sample_boxes(4000, 120, 80, (0.2, 1.0), (3 / 4, 4 / 3))
    for v in (top, left, h, w):
        np.testing.assert_array_equal(v, np.round(v))  # integer pixel boxes
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 120).all() and (left + w <= 80).all()
    frac = h * w / (120 * 80)
    assert frac.min() >= 0.2 * 0.97
    aspect = w / h
    assert aspect.min() >= 0.75 * 0.96 and aspect.max() <= 4 / 3 * 1.04
    # Offsets are uniform over the free range: mean relative offset ~ 1/2.
    slack = 120 - h
    rel = top[slack > 0] / slack[slack > 0]
    assert abs(rel.mean() - 0.5) < 0.03


@pytest.mark.parametrize("h,w,expected", [(40, 40, (0, 0, 40, 40)),
                                          (40, 80, (0, 13, 40, 53)),   # too wide
                                          (80, 30, (20, 0, 40, 30))])  # too tall
def test_crop_fallback_is_centre_crop(h, w, expected):
    # No candidate can fit an area above the image's, so the fallback always runs.
    boxes = _sample_boxes(16, h, w, (1.5, 2.0), (3 / 4, 4 / 3))
    for v, e in zip(boxes, expected):
        np.testing.assert_array_equal(v, e)


def test_normalize():
    mean, std = np.array(A.IMAGENET_MEAN), np.array(A.IMAGENET_STD)
    x = jnp.asarray(np.stack([mean, mean + std, mean - 2 * std]).astype(np.float32))
    np.testing.assert_allclose(A.normalize(x), [[0, 0, 0], [1, 1, 1], [-2, -2, -2]], atol=1e-6)


def test_blur_kernel_size():
    """SimCLR's ~10% of the side from 20 px up (23 taps at 224 px), and at every side a radius of
    at least 3 x the largest scaled sigma, never less than 1."""
    assert [A.blur_kernel_size(s) for s in (32, 64, 96, 160, 224)] == [3, 7, 9, 17, 23]
    assert [A.blur_kernel_size(s) for s in (1, 8, 16, 19)] == [3, 3, 3, 3]
    for size, sigma_max in itertools.product((8, 16, 24, 32, 64, 224), (0.5, 2.0, 8.0, 20.0)):
        k = A.blur_kernel_size(size, sigma_max)
        assert k % 2 == 1 and k // 2 >= max(1, 3 * sigma_max * size / 224), (size, sigma_max)
        assert k >= A.blur_kernel_size(size)  # a wider sigma range never narrows the kernel
    flat = jnp.full((20, 20, 3), 0.3)
    np.testing.assert_allclose(A.gaussian_blur(flat, 1.5, 7), flat, atol=1e-6)


@pytest.mark.parametrize("out_size,sigma_max", [(16, 2.0), (16, 8.0), (32, 2.0), (32, 8.0)])
def test_blur_does_not_vanish_at_small_sizes(out_size, sigma_max):
    """A view blurred at the largest sigma augment_image draws at `out_size` (sigma_max px of a
    224 px image, scaled by out_size / 224), with the kernel it uses there, differs from the
    unblurred view. At 16 px the old kernel (~10% of the side) had no tap beside the centre.
    At the default sigma_max 2 a 16 px view's sigma is 1/7 px: the neighbours' taps weigh
    ~exp(-24.5) of the centre's, so only pixels at 0 move (by that weight); 8 px of 224 is a blur
    that shows at 16 px."""
    x = np.random.RandomState(0).rand(out_size, out_size, 3).astype(np.float32)
    x[:, :2] = 0.0  # black pixels beside brighter ones
    sigma = sigma_max * out_size / 224
    y = np.asarray(A.gaussian_blur(jnp.asarray(x), sigma, A.blur_kernel_size(out_size, sigma_max)))
    assert (y != x).any()
    if sigma > 0.25:
        assert np.abs(y - x).mean() > 1e-4


# ----------------------------------------------------------------------------
# Parity with torchvision.transforms.functional on float images.
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv():
    pytest.importorskip("torchvision")
    import torch
    import torchvision.transforms.functional as TF
    return torch, TF


def _float_image():
    rng = np.random.RandomState(0)
    x = rng.rand(24, 20, 3).astype(np.float32)
    x[0] = 0.5                         # a gray row (hue undefined)
    x[1] = [1.0, 0.0, 0.0]             # saturated red
    x[2] = x[2, :, :1]                 # more gray pixels
    x[3, :10] = 0.0                    # black
    return x


def _to_torch(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def _from_torch(t):
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
@pytest.mark.parametrize("factor", [0.0, 0.3, 1.0, 1.7])
def test_blend_ops_match_torchvision(tv, name, factor):
    torch, TF = tv
    x = _float_image()
    ours = getattr(A, f"adjust_{name}")(jnp.asarray(x), factor)
    theirs = getattr(TF, f"adjust_{name}")(_to_torch(torch, x), factor)
    np.testing.assert_allclose(ours, _from_torch(theirs), atol=1e-5)


@pytest.mark.parametrize("delta", [-0.5, -0.3, -0.05, 0.0, 0.1, 0.45, 0.5])
def test_hue_matches_torchvision(tv, delta):
    torch, TF = tv
    x = _float_image()
    ours = A.adjust_hue(jnp.asarray(x), delta)
    theirs = _from_torch(TF.adjust_hue(_to_torch(torch, x), delta))
    # Both are HSV round trips; they agree to ~1e-6. (At delta == 0 ours is the
    # exact identity, torchvision's round trip is off by ~1e-6.)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_grayscale_and_solarize_match_torchvision(tv):
    torch, TF = tv
    x = _float_image()
    t = _to_torch(torch, x)
    np.testing.assert_allclose(A.rgb_to_grayscale(jnp.asarray(x)),
                               _from_torch(TF.rgb_to_grayscale(t, 3)), atol=1e-6)
    import dm_pix as pix
    np.testing.assert_array_equal(pix.solarize(jnp.asarray(x), 0.5),
                                  _from_torch(TF.solarize(t, 0.5)))


@pytest.mark.parametrize("sigma,ksize", [(0.05, 3), (0.5, 7), (2.0, 9), (1.0, 1)])
def test_blur_matches_torchvision(tv, sigma, ksize):
    torch, TF = tv
    x = _float_image()
    ours = A.gaussian_blur(jnp.asarray(x), sigma, ksize)
    theirs = TF.gaussian_blur(_to_torch(torch, x), [ksize, ksize], [sigma, sigma])
    np.testing.assert_allclose(ours, _from_torch(theirs), atol=1e-5)


def test_blur_at_224_px_matches_torchvision(tv):
    """augment_image's blur at 224 px: the 23-tap kernel, at both ends of the sigma range."""
    torch, TF = tv
    x = np.random.RandomState(1).rand(224, 224, 3).astype(np.float32)
    k = A.blur_kernel_size(224, A.ViewConfig().blur_sigma[1])
    assert k == 23
    for sigma in A.ViewConfig().blur_sigma:
        ours = A.gaussian_blur(jnp.asarray(x), sigma, k)
        theirs = TF.gaussian_blur(_to_torch(torch, x), [k, k], [sigma, sigma])
        np.testing.assert_allclose(ours, _from_torch(theirs), atol=1e-5)


def test_jitter_order_matches_torchvision(tv):
    """Every (blend order, hue slot) equals torchvision's ops run in that order."""
    torch, TF = tv
    x = _float_image()
    factors, hue = (0.7, 1.6, 0.2), 0.23
    tv_ops = [lambda t: TF.adjust_brightness(t, factors[0]),
              lambda t: TF.adjust_contrast(t, factors[1]),
              lambda t: TF.adjust_saturation(t, factors[2]),
              lambda t: TF.adjust_hue(t, hue)]
    apply = jax.jit(A._apply_jitter)
    seen = set()
    for order in itertools.permutations(range(3)):
        for slot in range(4):
            sequence = list(order[:slot]) + [3] + list(order[slot:])
            seen.add(tuple(sequence))
            t = _to_torch(torch, x)
            for op in sequence:
                t = tv_ops[op](t)
            ours = apply(jnp.asarray(x), jnp.array(factors), hue, jnp.array(order), slot)
            np.testing.assert_allclose(ours, _from_torch(t), atol=1e-5, err_msg=str(sequence))
    assert len(seen) == 24  # all permutations of the 4 ops are reachable


def test_jitter_order_distribution_is_uniform():
    keys = jax.random.split(_key(9), 4800)
    _, _, order, slot = jax.vmap(lambda k: A._jitter_params(k, 5.0, A.ViewConfig()))(keys)
    codes = np.asarray(order[:, 0] * 100 + order[:, 1] * 10 + order[:, 2]) * 10 + np.asarray(slot)
    counts = collections.Counter(codes.tolist())
    assert len(counts) == 24
    assert all(abs(c - 200) < 60 for c in counts.values()), counts  # ~4 sigma


def test_jitter_factor_ranges():
    keys = jax.random.split(_key(10), 2000)
    cfg = A.ViewConfig()
    for m in (2.5, 5.0, 15.0):
        f, h, _, _ = jax.vmap(lambda k: A._jitter_params(k, m, cfg))(keys)
        s = 0.4 * m / A.STANDARD_MAGNITUDE
        f = np.asarray(f)
        assert f.min() >= max(0.0, 1 - s) - 1e-6 and f.max() <= 1 + s + 1e-6
        assert abs(f.mean() - (max(0.0, 1 - s) + 1 + s) / 2) < 0.03
        hmax = min(0.1 * m / A.STANDARD_MAGNITUDE, 0.5)
        assert np.abs(h).max() <= hmax + 1e-7 and np.abs(h).max() > 0.9 * hmax


def test_crop_params_match_torchvision_statistics(tv):
    torch, _ = tv
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    img = torch.zeros(3, 60, 90)
    scale, ratio = (0.2, 1.0), (3 / 4, 4 / 3)
    theirs = np.array([RandomResizedCrop.get_params(img, list(scale), list(ratio))
                       for _ in range(3000)], dtype=np.float64)
    ours = np.stack(_sample_boxes(3000, 60, 90, scale, ratio), 1).astype(np.float64)

    def stats(b):
        top, left, h, w = b.T
        return np.array([(h * w).mean() / 5400, np.log(w / h).mean(), top.mean(), left.mean()])

    diff = np.abs(stats(ours) - stats(theirs))
    assert (diff < [0.015, 0.02, 0.6, 1.2]).all(), (stats(ours), stats(theirs))
    # Fallback (nothing fits) is deterministic: compare exactly.
    for hh, ww in [(40, 80), (80, 30), (40, 40)]:
        t = RandomResizedCrop.get_params(torch.zeros(3, hh, ww), [1.5, 2.0], list(ratio))
        o = [int(v[0]) for v in _sample_boxes(1, hh, ww, (1.5, 2.0), ratio)]
        assert tuple(o) == tuple(t)
