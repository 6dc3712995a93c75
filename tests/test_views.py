"""Training views are drawn as torchvision draws them: crop boxes from the whole image (the host's
WholeImage transform, then the device's crop_box) against RandomResizedCrop.get_params on the
original file, a resized crop that equals torchvision's inside a padded canvas, and an evaluation
crop that equals torchvision's Resize + CenterCrop."""
import images
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from effssl_jax import augment
from effssl_jax.data import canvas, folder

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
functional = pytest.importorskip("torchvision.transforms.functional")

RATIO = (3 / 4, 4 / 3)
# (height, width): square, 4:3, 3:4, 16:9, and one smaller than the resolution.
SHAPES = [(300, 300), (300, 400), (400, 300), (270, 480), (30, 40)]
N = 2000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    paths = {}
    for i, (h, w) in enumerate(SHAPES):
        paths[h, w] = root / f"{h}x{w}.jpg"
        images.write_jpeg(paths[h, w], h, w, seed=i)
    return paths


def _statistics(boxes, height, width):
    """Area fraction, log aspect ratio and the box centre (relative) of boxes (top, left, h, w)
    in an image of height x width."""
    top, left, h, w = (np.asarray(b, np.float64) for b in boxes)
    return {"area": h * w / (height * width), "log_aspect": np.log(w / h),
            "centre_y": (top + h / 2) / height, "centre_x": (left + w / 2) / width}


def _torchvision_boxes(height, width, scale, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(1, height, width)
    return np.array([transforms.RandomResizedCrop.get_params(img, list(scale), list(RATIO))
                     for _ in range(N)], np.float64).T


def _library_boxes(path, resolution, scale, square=False, seed=1):
    """Boxes of N views of `path` in the file's coordinates: the host's WholeImage at the
    resolution's host size, then the device's crop_box inside the valid part. square=True is the
    old pipeline, a deliberately wrong sampler: the central square of the image, then the box."""
    height0, width0 = folder.Image.open(path).size[::-1]
    size = canvas.host_size(resolution, scale[0], max(RATIO), 4 / 3)
    pixels, (h, w) = folder.WholeImage(size)(str(path))
    assert pixels.shape == (size.canvas, size.canvas, 3)
    side = min(h, w)
    keys = jax.random.split(jax.random.key(seed), N)
    sample = jax.jit(jax.vmap(lambda k, hh, ww: augment.crop_box(k, hh, ww, scale, RATIO)))
    ones = jnp.ones(N, jnp.int32)
    if square:
        top, left, bh, bw = (np.asarray(b) for b in sample(keys, side * ones, side * ones))
        top, left = top + (h - side) // 2, left + (w - side) // 2
    else:
        top, left, bh, bw = (np.asarray(b) for b in sample(keys, h * ones, w * ones))
    sy, sx = height0 / h, width0 / w  # host pixels -> file pixels
    return np.stack([top * sy, left * sx, bh * sy, bw * sx]), (height0, width0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 1.0)])
def test_crop_boxes_follow_torchvision_on_the_whole_image(files, shape, scale):
    boxes, (height, width) = _library_boxes(files[shape], 64, scale)
    ours = _statistics(boxes, height, width)
    theirs = _statistics(_torchvision_boxes(height, width, scale), height, width)
    for name in ours:
        p = scipy.stats.ks_2samp(ours[name], theirs[name]).pvalue
        assert p > 0.01, (name, p)
    if height != width:  # the old square crop is a different distribution: the test can fail
        wrong = _statistics(_library_boxes(files[shape], 64, scale, square=True)[0], height, width)
        assert min(scipy.stats.ks_2samp(wrong[k], theirs[k]).pvalue for k in wrong) < 1e-6


def test_host_keeps_whole_images_sharp_enough_and_never_enlarges(files):
    size = canvas.host_size(64, 0.2, 4 / 3, 4 / 3)
    assert size == canvas.HostSize(166, 224)  # ceil(64 * sqrt(4/3 / 0.2)), 4/3 of it up to 8
    for (h0, w0), path in files.items():
        pixels, (h, w) = folder.WholeImage(size)(str(path))
        assert min(h, w) == min(min(h0, w0), size.short) or max(h, w) == size.canvas
        assert h <= h0 and w <= w0 and max(h, w) <= size.canvas
        assert abs(w / h - w0 / h0) < 0.02 * w0 / h0  # aspect ratio kept
        assert not pixels[h:].any() and not pixels[:, w:].any()  # zero padding
    # The smallest box, of area 0.2 and aspect 4:3, spans >= 64 px on its shorter side.
    short = size.short
    assert np.sqrt(0.2 * short * short / (4 / 3)) >= 64


def test_resized_crop_equals_torchvision_inside_a_padded_canvas():
    x = np.random.default_rng(0).random((37, 53, 3)).astype(np.float32)
    padded = np.zeros((64, 64, 3), np.float32)
    padded[:37, :53] = x
    crop = jax.jit(augment.resized_crop, static_argnums=5)
    for top, left, h, w, out in [(3, 5, 20, 30, 16), (0, 0, 37, 53, 64), (10, 2, 7, 9, 32),
                                 (17, 23, 20, 30, 8), (0, 0, 37, 53, 24)]:
        theirs = functional.resized_crop(torch.from_numpy(x).permute(2, 0, 1), top, left, h, w,
                                         [out, out], antialias=True).permute(1, 2, 0).numpy()
        ours = np.asarray(crop(jnp.asarray(padded), top, left, h, w, out))
        np.testing.assert_allclose(ours, np.clip(theirs, 0, 1), atol=1e-5)


@pytest.mark.parametrize("shape", [(300, 400), (400, 300), (30, 40)], ids=str)
@pytest.mark.parametrize("resolution,crop_fraction", [(64, 0.875), (32, 1.0)])
def test_evaluation_crop_equals_torchvision_resize_and_centre_crop(files, shape, resolution,
                                                                  crop_fraction):
    from PIL import Image
    ours, size = folder.CenterCrop(resolution, crop_fraction)(str(files[shape]))
    assert size == (resolution, resolution)
    pipeline = transforms.Compose([transforms.Resize(round(resolution / crop_fraction)),
                                   transforms.CenterCrop(resolution)])
    with Image.open(files[shape]) as im:
        theirs = np.asarray(pipeline(im.convert("RGB")))
    np.testing.assert_array_equal(ours, theirs)


def test_host_size_covers_the_local_crops():
    """With local crops (multicrop.py) the host keeps images sharp enough for their smallest box
    at their side too: DINO's ViT recipe draws global crops from 0.4 at 224 px and local ones
    from 0.05 at 96 px, which need the longer shorter side."""
    from effssl_jax import config_schema, experiment, methods
    c = config_schema.from_recipe("configs/dino_vit_baseline.py")
    views = methods.view_configs(c)
    with_local = experiment.host_size(c, views, 224)
    assert with_local.short == canvas.short_side(96, 0.05, 4 / 3)  # 496 > 409 for the globals
    c.augment.local_crops.count = 0
    assert experiment.host_size(c, methods.view_configs(c), 224).short == canvas.short_side(
        224, methods.view_configs(c)[0].crop_scale[0], 4 / 3)
