"""Generated, download-free shape dataset for quick SSL demos on CPU.

Each class is a *shape* (disk, ring, square, ...) rendered with random position,
scale, rotation, aspect, foreground/background colours and background texture,
so colour says nothing about the class while shape structure does. Everything
is drawn with vectorised NumPy via signed distance functions (SDFs): a pixel's
coverage is ``clip(0.5 - sdf_in_pixels, 0, 1)``, which also anti-aliases edges.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    "disk", "ring", "square", "triangle", "plus",
    "hstripes", "vstripes", "checker", "star", "two_blobs",
)
_SPLIT_IDS = {"train": 0, "test": 1}
# Stripes must stay roughly axis aligned (else h/v would be the same class).
_MAX_ROT = {"hstripes": np.pi / 9, "vstripes": np.pi / 9}


def _box(u, v, hu, hv):
    return np.maximum(np.abs(u) - hu, np.abs(v) - hv)


def _stripes(w, phase, period=0.6):
    f = np.mod(w / period + phase, 1.0)
    return np.abs(f - 0.5) * period - period / 4


def _sdf(name, u, v, phase):
    """Signed distance (object units, object radius = 1) of class ``name``."""
    r = np.hypot(u, v)
    disk = r - 0.95
    if name == "disk":
        return disk
    if name == "ring":
        return np.abs(r - 0.72) - 0.23
    if name == "square":
        return _box(u, v, 0.8, 0.8)
    if name == "triangle":  # intersection of three half-planes, inradius 0.55
        angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
        return np.max([u * np.cos(a) + v * np.sin(a) for a in angles], axis=0) - 0.55
    if name == "plus":
        return np.minimum(_box(u, v, 0.95, 0.27), _box(u, v, 0.27, 0.95))
    if name == "hstripes":
        return np.maximum(disk, _stripes(v, phase))
    if name == "vstripes":
        return np.maximum(disk, _stripes(u, phase))
    if name == "checker":
        c = 0.55
        fu, fv = np.mod(u / c + phase, 1.0), np.mod(v / c + phase, 1.0)
        edge = c * np.minimum(0.5 - np.abs(fu - 0.5), 0.5 - np.abs(fv - 0.5))
        inside = (fu < 0.5) ^ (fv < 0.5)
        return np.maximum(disk, np.where(inside, -edge, edge))
    if name == "star":  # 5 points; polar approximation scaled to ~unit gradient
        a = np.mod(np.arctan2(v, u), 2 * np.pi / 5) - np.pi / 5
        rr = 0.42 + 0.58 * (1 - np.abs(a) / (np.pi / 5))
        return (r - rr) * 0.6
    if name == "two_blobs":
        return np.minimum(np.hypot(u - 0.52, v), np.hypot(u + 0.52, v)) - 0.45
    raise ValueError(f"unknown class {name!r}")


def _smooth_noise(rng, n, size, grid, channels):
    """Low-frequency noise: a random ``grid x grid`` field, bilinearly upsampled."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    w = pos - lo
    interp = np.zeros((size, grid), np.float32)
    interp[np.arange(size), lo] = 1 - w
    interp[np.arange(size), lo + 1] = w
    g = rng.standard_normal((n, grid, grid, channels), dtype=np.float32)
    return np.einsum("sa,nabc,tb->nstc", interp, g, interp, optimize=True)


def _colours(rng, n, min_contrast=0.25):
    """Independent fg/bg colours with a minimum luminance gap (shape visible in gray)."""
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    bg = rng.random((n, 3), dtype=np.float32)
    fg = rng.random((n, 3), dtype=np.float32)
    for _ in range(50):  # rejection sampling; ~60% of draws fail, so this ends fast
        bad = np.abs((fg - bg) @ lum) < min_contrast
        if not bad.any():
            return fg, bg
        fg[bad] = rng.random((int(bad.sum()), 3), dtype=np.float32)
    # Practically unreachable; moving 0.5 away from the bg gives a gap >= ~0.29.
    bad = np.abs((fg - bg) @ lum) < min_contrast
    dark = (bg @ lum < 0.5)[:, None]
    fg[bad] = np.where(dark, np.minimum(bg + 0.5, 1), np.maximum(bg - 0.5, 0))[bad]
    return fg, bg


def _render(rng, labels, size, names):
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    radius = size * rng.uniform(0.28, 0.42, n).astype(np.float32)
    cx = size * (0.5 + rng.uniform(-0.14, 0.14, n)).astype(np.float32)
    cy = size * (0.5 + rng.uniform(-0.14, 0.14, n)).astype(np.float32)
    aspect = np.exp(rng.uniform(-0.15, 0.15, n)).astype(np.float32)
    max_rot = np.array([_MAX_ROT.get(names[c], np.pi) for c in labels], np.float32)
    theta = rng.uniform(-1, 1, n).astype(np.float32) * max_rot
    phase = rng.random(n, dtype=np.float32)[:, None, None]

    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    scale_u = (radius * aspect)[:, None, None]
    scale_v = (radius / aspect)[:, None, None]
    u = (cos * dx + sin * dy) / scale_u
    v = (-sin * dx + cos * dy) / scale_v

    sdf = np.empty((n, size, size), np.float32)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        sdf[idx] = _sdf(names[c], u[idx], v[idx], phase[idx])
    # Convert to pixels with the smaller axis scale, so edges stay ~1 px wide.
    alpha = np.clip(0.5 - sdf * np.minimum(scale_u, scale_v), 0, 1)[..., None]

    fg, bg = _colours(rng, n)
    background = (bg[:, None, None] + 0.18 * _smooth_noise(rng, n, size, 4, 3)
                  + 0.08 * _smooth_noise(rng, n, size, 9, 3))
    shade = 1 + 0.12 * _smooth_noise(rng, n, size, 3, 1)
    foreground = fg[:, None, None] * shade
    img = alpha * foreground + (1 - alpha) * background
    img += rng.normal(0, 0.04, img.shape).astype(np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def make_synthetic(split: str, num_examples: int, image_size: int = 32,
                   num_classes: int = 10, seed: int = 0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images uint8 [N,S,S,3], labels int32 [N])`` for split 'train'/'test'.

    The splits use different random streams (held-out images) of the same
    classes; the result depends only on the arguments. Classes are the first
    ``num_classes`` of ``CLASS_NAMES`` and balanced to within one example.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}")
    if num_examples < 0 or image_size < 8:
        raise ValueError(f"need num_examples >= 0 and image_size >= 8, got "
                         f"{num_examples}, {image_size}")
    rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
    labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    chunk = max(1, 2_000_000 // (image_size * image_size))  # bound float32 temporaries
    for start in range(0, num_examples, chunk):
        sl = slice(start, start + chunk)
        images[sl] = _render(rng, labels[sl], image_size, CLASS_NAMES)
    return images, labels
