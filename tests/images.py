"""Generated image files for the tests, so that no test needs a downloaded data set.

`write_image_folder` writes a small labelled folder `root/{train,val}/<class>/*.JPEG` like
Imagenette's, and `write_jpeg` one image of any size. Each image is a class's shape (the shapes of
effssl_jax/data/synthetic.py: disk, ring, square, ...) in the class's colour on a textured
background of the opposite brightness, so a kNN on raw pixels is well above chance, also for the
greyscale ones. Everything is deterministic: the pixels depend only on the arguments.

A folder's files cycle through the sizes of `SIZES` (square, 4:3 landscape, 3:4 portrait, 16:9,
and one under 32 px on a side) and the modes of `MODES` (RGB, with a greyscale "L" and a CMYK
JPEG in every six files), shifted per class so that a class of 4 files and two classes already
hold all five sizes and both odd modes. File 0 of class 0 of each split is a 160 x 160 RGB image
(Imagenette-160's size), so a test can rely on its first image being square.

tests/conftest.py's `image_folder` fixture makes such a folder once per test session."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from effssl_jax.data.synthetic import CLASS_NAMES, _sdf

# (height, width): square, 4:3 landscape, 3:4 portrait, 16:9 landscape, and one under 32 px.
SIZES = ((160, 160), (120, 160), (160, 120), (90, 160), (20, 28))
MODES = ("RGB", "RGB", "L", "RGB", "CMYK", "RGB")
SPLITS = ("train", "val")
_SPLIT_IDS = {"train": 0, "val": 1, "validation": 1, "test": 2}
# One colour per class (RGB in [0, 1]); the shape carries the class in greyscale images.
PALETTE = np.array([[0.9, 0.1, 0.1], [0.1, 0.7, 0.1], [0.15, 0.3, 0.95], [0.95, 0.85, 0.1],
                    [0.8, 0.2, 0.85], [0.1, 0.85, 0.85], [0.95, 0.55, 0.1], [0.55, 0.3, 0.1],
                    [0.98, 0.98, 0.98], [0.05, 0.05, 0.05]], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _smooth(rng, height, width, grid, channels):
    """Low-frequency noise: a random grid x grid field, bilinearly upsampled to the image."""
    field = rng.standard_normal((channels, grid, grid)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(f, mode="F").resize(
        (width, height), Image.Resampling.BILINEAR)) for f in field], -1)


def render(height: int, width: int, label: int, seed=0) -> np.ndarray:
    """RGB uint8 [height, width, 3]: shape CLASS_NAMES[label % 10] in PALETTE[label % 10], at a
    random position, scale, rotation and aspect (undistorted by the image's aspect ratio), on a
    textured background whose brightness is far from the shape's."""
    rng = np.random.default_rng(seed)
    c = label % len(CLASS_NAMES)
    side = min(height, width)
    radius = side * rng.uniform(0.28, 0.42)
    cx = width / 2 + side * rng.uniform(-0.12, 0.12)
    cy = height / 2 + side * rng.uniform(-0.12, 0.12)
    aspect = np.exp(rng.uniform(-0.15, 0.15))
    stripes = CLASS_NAMES[c] in ("hstripes", "vstripes")  # stay roughly axis aligned
    theta = rng.uniform(-1, 1) * (np.pi / 9 if stripes else np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    su, sv = radius * aspect, radius / aspect
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / su
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / sv
    sdf = _sdf(CLASS_NAMES[c], u, v, rng.random())
    alpha = np.clip(0.5 - sdf * min(su, sv), 0, 1)[..., None]

    fg = np.clip(PALETTE[c] * rng.uniform(0.85, 1.0) + rng.uniform(-0.05, 0.05, 3), 0, 1)
    fg_luma = float(fg @ _LUMA)
    bg_luma = fg_luma - 0.45 if fg_luma > 0.5 else fg_luma + 0.45
    bg = np.clip(bg_luma + rng.uniform(-0.12, 0.12, 3), 0, 1)
    background = bg + 0.12 * _smooth(rng, height, width, 4, 3) + 0.05 * _smooth(
        rng, height, width, 9, 3)
    image = alpha * fg * (1 + 0.08 * _smooth(rng, height, width, 3, 1)) + (1 - alpha) * background
    image += rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def write_jpeg(path, height: int, width: int, mode: str = "RGB", seed=0,
               label: int | None = None, quality: int = 90):
    """Writes a height x width JPEG of `render` (class `label`, by default seed % 10 for an int
    seed) in PIL mode `mode` ("RGB", "L" or "CMYK") to `path`, making its folder; returns path.
    `seed` (an int or a sequence of ints) picks the image among those of its class."""
    key = [int(k) for k in np.ravel(seed)]
    label = key[0] % len(CLASS_NAMES) if label is None else label
    image = Image.fromarray(render(height, width, label, seed=[*key, label]))
    if mode != "RGB":
        image = image.convert(mode)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        image.save(f, format="JPEG", quality=quality)
    return path


def file_spec(split: str, label: int, i: int) -> tuple[int, int, str]:
    """(height, width, mode) of file i of class `label` in `split` of `write_image_folder`."""
    del split  # the same cycle in every split, so that each starts with a square RGB image
    height, width = SIZES[(i + 2 * label) % len(SIZES)]
    return height, width, MODES[(i + 3 * label) % len(MODES)]


def write_image_folder(root, per_class: int = 4, classes=2, splits=SPLITS, seed: int = 0):
    """Writes root/<split>/<class>/<i>_<H>x<W>_<mode>.JPEG for each split of `splits`, each class
    (`classes`: a count, named CLASS_NAMES[:count], or a list of folder names, class k drawing
    shape k) and i < per_class; returns root (a pathlib.Path or str, as given)."""
    names = list(CLASS_NAMES[:classes]) if isinstance(classes, int) else list(classes)
    if not 1 <= len(names) <= len(CLASS_NAMES):
        raise ValueError(f"1 to {len(CLASS_NAMES)} classes, got {len(names)}")
    for split in splits:
        for label, name in enumerate(names):
            for i in range(per_class):
                height, width, mode = file_spec(split, label, i)
                path = os.path.join(root, split, name, f"{i:03d}_{height}x{width}_{mode}.JPEG")
                write_jpeg(path, height, width, mode,
                           seed=[seed, _SPLIT_IDS.get(split, 3), label, i], label=label)
    return root
