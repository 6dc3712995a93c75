"""How sharp training views are: source pixels per output pixel, and the share of upsampled views,
of the library's views against torchvision's RandomResizedCrop on the same files. No training, no
timing: crop boxes are sampled and measured.

    python benchmarks/view_sharpness.py                       # the table of docs/data.md
    python benchmarks/view_sharpness.py --scale 0.08 --views 20000

For each (file size, resolution r) it samples --views crop boxes three ways:
- torchvision: `RandomResizedCrop.get_params` on the file itself (what a PyTorch pipeline that
  decodes the file crops from), resized from the file's pixels;
- library, whole image (now): the host keeps the whole image at data/canvas.py's host size
  (`folder.WholeImage`), and the device's `augment.crop_box` draws the box inside it;
- library, host square (before): the host kept a square of side max(r, 8 round(r 8/7 / 8)) (the
  shorter side resized, the square cropped) and the device drew the box inside that square.

A view's source pixels per output pixel is sqrt(box height x box width) / r in the pixels the resize
reads; it is upsampled when its box's shorter side is under r pixels. Printed: the median of the
first and the share of the second.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RATIO = (3 / 4, 4 / 3)
CASES = ((375, 500, 224), (375, 500, 96), (160, 213, 64))  # (height, width, resolution)


def _boxes(height: int, width: int, scale, n: int, seed: int = 0) -> np.ndarray:
    """[n, 2] (h, w) of the device sampler's boxes in an image of height x width."""
    import jax

    from effssl_jax import augment
    keys = jax.random.split(jax.random.key(seed), n)
    sample = jax.jit(jax.vmap(lambda k: augment.crop_box(k, height, width, scale, RATIO)))
    _, _, h, w = sample(keys)
    return np.stack([np.asarray(h), np.asarray(w)], 1)


def _torchvision_boxes(height: int, width: int, scale, n: int) -> np.ndarray:
    import torch
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    return np.array([RandomResizedCrop.get_params(img, list(scale), list(RATIO))[2:]
                     for _ in range(n)], np.float64)


def _old_square(resolution: int) -> int:
    """The host square of the grain loader before whole images (data.host_margin 8/7)."""
    return max(resolution, 8 * round(resolution * 8 / 7 / 8))


def sharpness(boxes: np.ndarray, resolution: int) -> tuple[float, float]:
    """(median source pixels per output pixel, share of upsampled views) of boxes [n, 2]."""
    return (float(np.median(np.sqrt(boxes[:, 0] * boxes[:, 1]) / resolution)),
            float(np.mean(boxes.min(1) < resolution)))


def rows(scale, n: int, canvas_aspect: float = 4 / 3):
    from effssl_jax.data import canvas
    for height, width, r in CASES:
        size = canvas.host_size(r, scale[0], max(RATIO), canvas_aspect)
        h, w = canvas.fit(height, width, size)
        side = min(_old_square(r), min(height, width))
        yield {"file": f"{width}x{height}", "r": r,
               "torchvision": sharpness(_torchvision_boxes(height, width, scale, n), r),
               "whole": sharpness(_boxes(h, w, scale, n), r), "kept": f"{w}x{h}",
               "square": sharpness(_boxes(side, side, scale, n), r), "old": f"{side}x{side}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=0.2, help="the smallest crop scale")
    p.add_argument("--views", type=int, default=10000, help="boxes sampled per case")
    args = p.parse_args(argv)
    scale = (args.scale, 1.0)
    print(f"crop scale {scale[0]:g}-1, ratio 3/4-4/3, {args.views} boxes per case; "
          "median source px per output px / upsampled views")
    print("| file | r | torchvision | library now (host keeps) | library before (host square) |")
    print("|---|---:|---|---|---|")
    for row in rows(scale, args.views):
        cell = lambda s: f"{s[0]:.2f} / {100 * s[1]:.0f}%"
        print(f"| {row['file']} | {row['r']} | {cell(row['torchvision'])} | "
              f"{cell(row['whole'])} ({row['kept']}) | {cell(row['square'])} ({row['old']}) |")


if __name__ == "__main__":
    main()
