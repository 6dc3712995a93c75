"""Whole images in a fixed canvas: what the host sends to the device for training views.

torchvision's `RandomResizedCrop` draws its box from the whole image at the file's own resolution.
To draw the same boxes on the device, the host keeps each image whole, with its aspect ratio,
and pads it into a fixed square canvas (static shape: one compiled step per bucket); the valid
height and width travel beside the pixels (`Images`), and the device's sampler works inside them
(augment.py).

How large the host keeps an image (`HostSize`) decides how sharp the views are. torchvision never
upsamples a crop that its file has the pixels for; here the shorter side is kept at
`short_side(r, min_scale, max_ratio)` = r * sqrt(max_ratio / min_scale) (capped at the file's own
size): the smallest box the sampler can draw, of area min_scale and aspect max_ratio, then still
spans at least r pixels on each side, so a view is upsampled only where the file itself is too
small, as torchvision's would be. The canvas is `canvas_aspect` x that side, so images up to that
aspect ratio (4:3 by default) are kept at the full short side; more elongated ones are shrunk until
their longer side fits. The choice and its costs (bytes per image, decode rate, device time) are
measured in docs/data.md.
"""
from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import numpy as np


class Images(flax.struct.PyTreeNode):
    """A batch of whole images, each at the top-left of its canvas: `pixels` uint8 [B, C, C, 3]
    (zeros outside the image), `sizes` int32 [B, 2] the valid (height, width) of each."""
    pixels: jax.Array | np.ndarray
    sizes: jax.Array | np.ndarray

    @classmethod
    def full(cls, pixels) -> "Images":
        """Images that fill their canvas (square arrays: synthetic data, tests)."""
        b, h, w = pixels.shape[:3]
        return cls(pixels, np.tile(np.array([[h, w]], np.int32), (b, 1)))

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> "Images":
        return Images(self.pixels[index], self.sizes[index])

    @property
    def canvas(self) -> int:
        return self.pixels.shape[1]


def as_images(images) -> Images:
    """`images` if an Images, else a uint8 array [B, H, W, 3] of images that fill it."""
    return images if isinstance(images, Images) else Images.full(images)


@dataclasses.dataclass(frozen=True)
class HostSize:
    """How the host keeps an image: its shorter side resized to `short` (never enlarged), inside
    a `canvas` x `canvas` square."""
    short: int
    canvas: int


def short_side(resolution: int, min_scale: float, max_ratio: float) -> int:
    """The shorter side at which the smallest crop box (area `min_scale` of the image, aspect
    `max_ratio`) still spans `resolution` pixels on its shorter side."""
    return math.ceil(resolution * math.sqrt(max_ratio / min_scale) - 1e-9)


def host_size(resolution: int, min_scale: float, max_ratio: float, canvas_aspect: float,
              fixed: int = 0) -> HostSize:
    """The HostSize for views at `resolution` drawn with crop scales from `min_scale` and aspect
    ratios up to `max_ratio`; `fixed` > 0 sets the shorter side instead. The canvas is rounded up
    to a multiple of 8."""
    return for_short_side(fixed or short_side(resolution, min_scale, max_ratio), canvas_aspect)


def for_short_side(short: int, canvas_aspect: float) -> HostSize:
    """The HostSize keeping shorter sides at `short`, in a canvas `canvas_aspect` x that side
    rounded up to a multiple of 8."""
    return HostSize(short, 8 * math.ceil(short * canvas_aspect / 8))


def fit(height: int, width: int, size: HostSize) -> tuple[int, int]:
    """The (height, width) an image of `height` x `width` is kept at: its shorter side at most
    size.short, its longer side at most size.canvas, aspect ratio kept, never enlarged."""
    s = min(1.0, size.short / min(height, width), size.canvas / max(height, width))
    return (min(size.canvas, max(1, round(height * s))), min(size.canvas, max(1, round(width * s))))
