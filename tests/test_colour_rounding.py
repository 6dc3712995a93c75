"""`augment.colour_rounding`: views rounded to 8 bits after each op, as torchvision computes on
uint8 tensors, against `torchvision.transforms.v2.functional` on uint8 tensors (its CPU kernels).

Each colour op and a ColorJitter in each of its 24 orders are compared for EXACT equality of the
uint8 levels. The uint8 ops run torchvision's float32 operations in its order (its fused
multiply-adds in the luma and the blends, its HSV formulas in the hue; XLA is kept from fusing a
product into an add where torchvision rounds both), so a level could only move where the float32
results differ, and they do not on these images (nor, for the luma, on any of the 2^24 colours).
Not exact, by at most a level on a small share of the pixels, each for the reason its test
states: the blur (a 2D kernel there, two 1D passes here: BLUR_TIES), the whole pipeline (the blur,
and its parameters computed in another program) and the crop's resize (fixed-point weights there,
float ones here: `test_crop_resize_is_within_a_level`).

Every comparison fails without the rounding: the float ops' views are off the 1/255 grid, and
rounded to it they still miss torchvision's uint8 levels on many pixels (`_assert_levels`
checks that the float op misses wherever the op changes levels at all)."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effssl_jax import augment as A
from effssl_jax import config_schema, hard_augment
from effssl_jax.errors import ConfigError
from effssl_jax.methods import byol, recipes

U8 = "uint8"


@pytest.fixture(scope="module")
def tv():
    pytest.importorskip("torchvision")
    import torch
    import torchvision.transforms.v2.functional as F
    return torch, F


def _u8_image(seed=0, h=48, w=40):
    """Smooth colours plus noise, with gray, saturated, black and white rows."""
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase, freq = rng.rand(1, 1, 3) * 6.28, 1 + 3 * rng.rand(1, 1, 3)
    base = 0.5 + 0.45 * np.sin(freq * (3 * xx + 2 * yy)[..., None] + phase)
    x = np.clip(255 * (base + 0.15 * rng.randn(h, w, 3)), 0, 255).astype(np.uint8)
    x[0] = 128
    x[1] = [255, 0, 0]
    x[2] = x[2, :, :1]
    x[3, : w // 2] = 0
    x[4, : w // 2] = 255
    return x


def _to_torch(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()


def _levels(torch_u8):
    return torch_u8.permute(1, 2, 0).numpy().astype(np.int64)


def _assert_levels(ours, theirs, float_ours=None, off_share=0.0):
    """`ours` (float in [0, 1]) lies on the 1/255 grid and equals torchvision's uint8 levels
    (but for at most `off_share` of the pixels, one level apart); `float_ours`, the same op
    without rounding, rounded to the grid, does not."""
    ours = np.asarray(ours, np.float64) * 255
    np.testing.assert_allclose(ours, np.round(ours), atol=1e-3)
    if off_share == 0:
        np.testing.assert_array_equal(np.round(ours).astype(np.int64), theirs)
    else:
        diff = np.abs(np.round(ours) - theirs)
        assert diff.max() <= 1 and (diff > 0).mean() <= off_share, (diff.max(), diff.mean())
    if float_ours is not None:
        missed = np.round(np.asarray(float_ours, np.float64) * 255) != theirs
        assert missed.mean() > 0.01, missed.mean()


# Round factors (whose blends often land on integers) and float32 draws like ColorJitter's.
FACTORS = [0.0, 0.3, 0.6, 1.0, 1.37, 1.7] + [
    float(f) for f in np.random.RandomState(1).uniform(0.5, 1.5, 4).astype(np.float32)]


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation"])
def test_blend_ops_match_torchvision_uint8(tv, name):
    torch, F = tv
    op = jax.jit(getattr(A, f"adjust_{name}"), static_argnums=2)
    for seed in range(3):
        x = _u8_image(seed)
        xf = jnp.asarray(x, jnp.float32) / 255
        for f in FACTORS:
            f = float(np.float32(f))
            theirs = _levels(getattr(F, f"adjust_{name}")(_to_torch(torch, x), f))
            ours = op(xf, f, U8)
            # At factor 1 (identity) or 0 (black, or a constant gray) float and uint8 agree.
            _assert_levels(ours, theirs, None if f in (0.0, 1.0) else op(xf, f, "float"))


@pytest.mark.parametrize("delta", [-0.5, -0.3, -0.05, 0.0, 0.1, 0.23, 0.45, 0.5])
def test_hue_matches_torchvision_uint8(tv, delta):
    torch, F = tv
    op = jax.jit(A.adjust_hue, static_argnums=2)
    delta = float(np.float32(delta))
    for seed in range(3):
        x = _u8_image(seed)
        xf = jnp.asarray(x, jnp.float32) / 255
        theirs = _levels(F.adjust_hue(_to_torch(torch, x), delta))
        # Hue 0 and a half turn map levels to levels.
        floats = None if delta in (0.0, 0.5, -0.5) else op(xf, delta, "float")
        _assert_levels(op(xf, delta, U8), theirs, floats)


def test_grayscale_matches_torchvision_uint8_on_every_colour(tv):
    """All 2^24 colours: the truncated luma is where float32 ties (0.2989 r + 0.587 g + 0.114 b
    an integer in decimal) could round either way."""
    torch, F = tv
    v = np.arange(256, dtype=np.uint8)
    x = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(4096, 4096, 3)
    theirs = F.rgb_to_grayscale(_to_torch(torch, x), 1)[0].numpy()
    ours = jax.jit(A._luma_levels)(jnp.asarray(x, jnp.float32))[..., 0]
    np.testing.assert_array_equal(np.asarray(ours), theirs)

    x = _u8_image()
    xf = jnp.asarray(x, jnp.float32) / 255
    _assert_levels(A.rgb_to_grayscale(xf, U8), _levels(F.rgb_to_grayscale(_to_torch(torch, x), 3)),
                   A.rgb_to_grayscale(xf))


def test_solarize_matches_torchvision_uint8(tv):
    """Levels >= 128 inverted: torchvision's solarize(uint8, 128), PIL's solarize(img, 128)."""
    torch, F = tv
    x = _u8_image()
    x[5, :4] = [[127, 128, 129], [0, 255, 128], [127, 127, 127], [128, 128, 128]]
    theirs = _levels(F.solarize(_to_torch(torch, x), 128))
    _assert_levels(A.solarize(jnp.asarray(x, jnp.float32) / 255, U8), theirs)


# torchvision blurs with a 2D kernel, here with two 1D passes: the float sums differ by ~1e-4 of a
# level, so a blurred value that close to a half level may round to either side.
BLUR_TIES = 1e-3


@pytest.mark.parametrize("sigma,ksize", [(0.05, 3), (0.5, 7), (1.3, 9), (2.0, 23), (1.0, 1)])
def test_blur_matches_torchvision_uint8(tv, sigma, ksize):
    torch, F = tv
    sigma = float(np.float32(sigma))
    for seed in range(2):
        x = _u8_image(seed)
        xf = jnp.asarray(x, jnp.float32) / 255
        theirs = _levels(F.gaussian_blur(_to_torch(torch, x), [ksize, ksize], [sigma, sigma]))
        # (The float blur of a uint8 image, rounded, is the same: only the grid tells them apart.)
        _assert_levels(A.gaussian_blur(xf, sigma, ksize, U8), theirs, off_share=BLUR_TIES)


def test_jitter_sequence_matches_torchvision_uint8(tv):
    """Every (blend order, hue slot): the 24 orders of torchvision's ColorJitter on uint8."""
    torch, F = tv
    x = _u8_image(3)
    xf = jnp.asarray(x, jnp.float32) / 255
    apply = jax.jit(A._apply_jitter, static_argnums=5)
    for factors, hue in [((0.7, 1.6, 0.2), 0.23), ((1.3, 0.6, 1.37), -0.1)]:
        factors = tuple(float(f) for f in np.float32(factors))
        hue = float(np.float32(hue))
        ops = [lambda t: F.adjust_brightness(t, factors[0]),
               lambda t: F.adjust_contrast(t, factors[1]),
               lambda t: F.adjust_saturation(t, factors[2]),
               lambda t: F.adjust_hue(t, hue)]
        for order in itertools.permutations(range(3)):
            for slot in range(4):
                sequence = list(order[:slot]) + [3] + list(order[slot:])
                t = _to_torch(torch, x)
                for op in sequence:
                    t = ops[op](t)
                args = (xf, jnp.array(factors), hue, jnp.array(order), slot)
                _assert_levels(apply(*args, U8), _levels(t), apply(*args, "float"))


def _params(key, magnitude, out_size, cfg):
    """augment_image's random parameters for `key`: coins, jitter, blur sigma."""
    _, k_jitter, k_misc = jax.random.split(key, 3)
    u = jax.random.uniform(k_misc, (6,))
    sigma = A._lerp(*cfg.blur_sigma, u[5]) * (out_size / 224)
    return u, A._jitter_params(k_jitter, magnitude, cfg), sigma


def _torch_pipeline(F, t, key, out_size, magnitude, cfg):
    """torchvision v2 on a uint8 tensor with the parameters augment_image draws from `key`, for a
    crop that is the whole image at its own size (so the resize is the identity). The parameters
    are computed jitted, as in augment_image (eagerly, a factor's lerp rounds twice where XLA
    fuses it into one multiply-add)."""
    u, jitter, sigma = jax.jit(_params, static_argnums=(2, 3))(key, magnitude, out_size, cfg)
    u = np.asarray(u)
    factors, hue, order, slot = (np.asarray(a) for a in jitter)
    if u[0] < cfg.jitter_prob:
        ops = [lambda t: F.adjust_brightness(t, float(factors[0])),
               lambda t: F.adjust_contrast(t, float(factors[1])),
               lambda t: F.adjust_saturation(t, float(factors[2])),
               lambda t: F.adjust_hue(t, float(hue))]
        for op in list(order[:slot]) + [3] + list(order[slot:]):
            t = ops[op](t)
    if u[1] < cfg.gray_prob:
        t = F.rgb_to_grayscale(t, 3)
    if u[2] < cfg.blur_prob:
        k = A.blur_kernel_size(out_size, cfg.blur_sigma[1])
        t = F.gaussian_blur(t, [k, k], [float(sigma)] * 2)
    if u[3] < cfg.solarize_prob:
        t = F.solarize(t, 128)
    if u[4] < cfg.flip_prob:
        t = F.horizontal_flip(t)
    return t


def test_pipeline_matches_torchvision_uint8(tv):
    """augment_image with colour_rounding uint8, every stage on with p 0.5, equals torchvision v2
    run on the uint8 image with the same parameters, but for the blur's near-half values
    (BLUR_TIES) and the parameters themselves: computed in another program than the step's, a
    jitter factor may be an ulp away (XLA fuses its lerp's multiply-add in one and not in the
    other), which moves a level where a blend is an integer (a channel equal to its gray)."""
    torch, F = tv
    out = 64
    cfg = A.ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_prob=0.75,
                       gray_prob=0.3, blur_prob=0.5, solarize_prob=0.5, colour_rounding=U8)
    images = np.stack([_u8_image(seed, out, out) for seed in range(4)])
    run = jax.jit(A.augment_image, static_argnames=("out_size", "cfg"))
    float_cfg = dataclasses.replace(cfg, colour_rounding="float")
    missed = []
    for i in range(16):
        key = jax.random.key(i)
        image = images[i % 4]
        theirs = _levels(_torch_pipeline(F, _to_torch(torch, image), key, out, 7.0, cfg))
        _assert_levels(run(key, image, (out, out), out_size=out, magnitude=7.0, cfg=cfg), theirs,
                       off_share=BLUR_TIES)
        floats = run(key, image, (out, out), out_size=out, magnitude=7.0, cfg=float_cfg)
        missed.append(np.round(np.asarray(floats, np.float64) * 255) != theirs)
    assert np.mean(missed) > 0.05, np.mean(missed)  # the float pipeline's views, rounded, miss


def test_crop_resize_is_within_a_level(tv):
    """The crop's resize against torchvision's uint8 resized_crop, which resamples horizontally,
    rounds to uint8 (halves up), then vertically, as resized_crop_uint8 does, but with
    fixed-point weights: a few pixels lie a level apart, the rest are equal. Rounding once,
    after the float resize, misses several times more."""
    torch, F = tv
    images = [_u8_image(seed, 120, 160) for seed in range(3)]
    boxes = [(0, 0, 120, 160, 32), (10, 30, 97, 120, 64), (5, 7, 40, 33, 64), (3, 9, 100, 90, 224),
             (2, 3, 18, 12, 16)]
    crop = jax.jit(A.resized_crop_uint8, static_argnums=5)
    crop_float = jax.jit(A.resized_crop, static_argnums=5)
    missed, missed_once = [], []
    for top, left, h, w, out in boxes:
        for x in images:
            theirs = _levels(F.resized_crop(_to_torch(torch, x), top, left, h, w, [out, out],
                                            antialias=True))
            ours = np.asarray(crop(jnp.asarray(x), top, left, h, w, out), np.float64) * 255
            np.testing.assert_allclose(ours, np.round(ours), atol=1e-3)
            diff = np.abs(np.round(ours) - theirs)
            assert diff.max() <= 1 and diff.mean() < 0.03, (top, left, h, w, out, diff.mean())
            missed.append(diff.mean())
            once = np.round(np.asarray(crop_float(jnp.asarray(x), top, left, h, w, out)) * 255)
            missed_once.append((once != theirs).mean())
    assert np.mean(missed) < 0.01 and np.mean(missed) < 0.25 * np.mean(missed_once), (
        np.mean(missed), np.mean(missed_once))


# ----------------------------------------------------------------------------
# The setting itself: the float path unchanged, the uint8 one on the grid, config and recipes.
# ----------------------------------------------------------------------------

def test_float_is_the_default_and_unchanged(tv):
    """colour_rounding 'float' is ViewConfig's default and the ops' (whose float parity with
    torchvision.transforms.functional is tests/test_augment.py's); spelled out it is the same
    program."""
    torch, F = tv
    assert A.ViewConfig().colour_rounding == "float"
    x = np.random.RandomState(0).rand(24, 20, 3).astype(np.float32)
    t = torch.from_numpy(x).permute(2, 0, 1)
    np.testing.assert_allclose(A.adjust_saturation(jnp.asarray(x), 1.4, "float"),
                               F.adjust_saturation(t, 1.4).permute(1, 2, 0).numpy(), atol=1e-5)
    images = np.stack([_u8_image(s, 40, 40) for s in range(4)])
    run = jax.jit(A.augment_batch, static_argnames=("out_size", "cfg"))
    cfg = A.ViewConfig(solarize_prob=0.5)
    default = run(jax.random.key(0), images, 24, 5.0, cfg)
    spelled = run(jax.random.key(0), images, 24, 5.0, A.ViewConfig(solarize_prob=0.5,
                                                                   colour_rounding="float"))
    np.testing.assert_array_equal(default, spelled)
    rounded = run(jax.random.key(0), images, 24, 5.0,
                  A.ViewConfig(solarize_prob=0.5, colour_rounding=U8))
    r = np.asarray(rounded, np.float64) * 255
    np.testing.assert_allclose(r, np.round(r), atol=1e-3)  # every pixel a level
    assert 0.3 / 255 < np.abs(np.asarray(rounded) - np.asarray(default)).mean() < 3 / 255


def test_hard_augment_trains_rounded_views():
    """Hard Augment renders its n views with render_views and the view configs it is given, so
    with uint8 rounding the pair it selects is two of those views, on the grid."""
    images = np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    configs = byol.asymmetric_views(A.ViewConfig(colour_rounding=U8))
    rng, n = jax.random.key(3), 4

    def features(v):
        return v.mean(axis=(1, 2))

    def loss(a, b, ta, tb):
        return jnp.abs(a - b).sum(-1)

    kwargs = dict(num_views=n, r_sel=8, resolution=16, view_configs=configs, dtype=jnp.float32)
    selection = jax.jit(lambda r: hard_augment.select(r, images, 5.0, features, None, loss,
                                                       **kwargs))(rng)
    views = jax.jit(A.render_views, static_argnums=(3, 4, 5, 6))(
        rng, images, 5.0, 16, configs, n, jnp.float32)
    pixels = (np.asarray(selection.pair) * np.asarray(A.IMAGENET_STD)
              + np.asarray(A.IMAGENET_MEAN)) * 255
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    chosen = np.asarray(~selection.unselected)  # [n, B]: the two views of each sample
    for b in range(len(images)):
        a_index, b_index = np.flatnonzero(chosen[:, b])
        np.testing.assert_allclose(selection.pair[:, b], views[[a_index, b_index], b], atol=1e-6)


def test_config_key_reaches_both_views_and_is_validated():
    c = config_schema.default_config()
    assert c.augment.colour_rounding == "float"
    c.augment.colour_rounding = U8
    for method in recipes.OFFICIAL:
        for recipe in recipes.RECIPES:
            c.augment.recipe = recipe
            views = recipes.view_configs(method, c.augment)
            assert [v.colour_rounding for v in views] == [U8, U8]
            unrounded = recipes.with_overrides(views, colour_rounding="float")
            assert [v.colour_rounding for v in unrounded] == ["float", "float"]
            assert recipes.with_overrides(views) == views  # '' keeps the views' own
    c.augment.colour_rounding = "uint16"
    with pytest.raises(ConfigError, match="augment.colour_rounding='uint16'.*float, uint8"):
        config_schema._check_augment(c.augment)
    with pytest.raises(ConfigError, match="colour_rounding"):
        recipes.view_configs("simsiam", c.augment)
    with pytest.raises(ValueError, match="colour_rounding"):
        A.ViewConfig(colour_rounding="uint16")
