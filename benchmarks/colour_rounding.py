"""How much `augment.colour_rounding = uint8` changes the training views, and what it costs.

    python benchmarks/colour_rounding.py                      # the table of docs/paper_notes.md
    python benchmarks/colour_rounding.py --images 512 --views 8 --resolution 64,128

Real images (the shared Imagenette, `../shared/data/imagenette2-160` from the repository root, or
--data), kept as training keeps them (`folder.WholeImage` at `canvas.host_size` for the SimSiam
recipe's crop scale), are rendered by `augment.augment_batch` with the paper's view (SimSiam's
recipe, methods/recipes.PAPER_VIEW) twice with the same keys, so every crop, coin and jitter
factor is the same and the views differ only by the rounding: 'float' (torchvision's formulas on
float tensors) and 'uint8' (rounded to 8 bits after the crop and each colour op, as torchvision
on uint8 tensors). Printed per resolution:

* per pixel: the mean |uint8 - float| and its mean signed value (in levels of 1/255), and the
  share of pixels more than 1 and more than 4 levels apart;
* per view: the share of views whose mean brightness, luma contrast (the luma's standard
  deviation) or saturation (mean max - min over the channels) moves by more than 1 level, and for
  scale the standard deviation of the brightness among an image's own views (float; crop and
  jitter);
* the colour histogram: the entropy (bits) of the pooled per-channel 8-bit histogram (the float
  views binned to the nearest level), and the share of pixels at 0 and at 255;
* device time of one jitted augment_batch of --batch images per setting (median of --repeats,
  the two settings interleaved) and their ratio, on whatever device JAX runs on.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _load(data: str, n: int, resolution: int, view, seed: int = 0):
    """n images of `data`'s train split (a fixed random sample over all classes) as Images."""
    from effssl_jax.data import canvas, folder
    paths, _, _ = folder.scan_folder(os.path.join(data, "train"))
    pick = np.random.RandomState(seed).choice(len(paths), n, replace=False)
    size = canvas.host_size(resolution, view.crop_scale[0], max(view.crop_ratio), 4 / 3)
    whole = folder.WholeImage(size)
    decoded = [whole(paths[i]) for i in sorted(pick)]
    pixels = np.stack([d[0] for d in decoded])
    sizes = np.array([d[1] for d in decoded], np.int32)
    return canvas.Images(pixels, sizes)


def _view_stats(x: np.ndarray) -> np.ndarray:
    """[V, 3] brightness, luma contrast, saturation of views [V, r, r, 3] in [0, 1]."""
    luma = x @ np.array([0.2989, 0.587, 0.114])
    return np.stack([x.mean((1, 2, 3)), luma.std((1, 2)), (x.max(-1) - x.min(-1)).mean((1, 2))],
                    1)


def _entropy(levels: np.ndarray) -> float:
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def measure(images, resolution: int, views: int, view, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from effssl_jax import augment
    configs = {r: dataclasses.replace(view, colour_rounding=r) for r in augment.COLOUR_ROUNDINGS}
    render = jax.jit(augment.augment_batch, static_argnames=("out_size", "cfg"))
    out = {r: [] for r in configs}
    for v in range(views):
        key = jax.random.key(1000 + v)
        for r, cfg in configs.items():
            for start in range(0, len(images), batch):
                out[r].append(np.asarray(render(key, images[start:start + batch], resolution,
                                                augment.STANDARD_MAGNITUDE, cfg), np.float64))
    f, u = (np.concatenate(out[r]) for r in ("float", "uint8"))
    diff = (u - f) * 255
    stats_f, stats_u = _view_stats(f), _view_stats(u)
    moved = np.abs(stats_u - stats_f) * 255 > 1
    # For scale: how much an image's views differ in brightness among themselves (float).
    spread = stats_f[:, 0].reshape(views, len(images)).std(0).mean() * 255
    row = {"views": len(f), "mean_abs": np.abs(diff).mean(), "mean_signed": diff.mean(),
           "spread": spread,
           "over_1": (np.abs(diff) > 1).mean(), "over_4": (np.abs(diff) > 4).mean(),
           "moved_brightness": moved[:, 0].mean(), "moved_contrast": moved[:, 1].mean(),
           "moved_saturation": moved[:, 2].mean(), "moved_any": moved.any(1).mean()}
    for r, x in (("float", f), ("uint8", u)):
        levels = np.round(x * 255).astype(np.int64)
        row[f"entropy_{r}"] = _entropy(levels)
        row[f"zero_{r}"] = (levels == 0).mean()
        row[f"full_{r}"] = (levels == 255).mean()

    # Device time: one jitted batch per setting, interleaved, median over repeats.
    batch_images = images[:batch]
    times = {r: [] for r in configs}
    key = jax.random.key(0)
    for r, cfg in configs.items():  # compile
        jax.block_until_ready(render(key, batch_images, resolution, 5.0, cfg))
    for i in range(repeats):
        for r, cfg in configs.items():
            t = time.perf_counter()
            jax.block_until_ready(render(jax.random.fold_in(key, i), batch_images, resolution,
                                         jnp.float32(5.0), cfg))
            times[r].append(time.perf_counter() - t)
    for r in configs:
        row[f"ms_{r}"] = 1e3 * float(np.median(times[r]))
    ratios = np.array(times["uint8"]) / np.array(times["float"])
    row["ratio"] = float(np.median(ratios))
    row["device"] = jax.devices()[0].device_kind
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "imagenette2-160"))
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--views", type=int, default=4, help="views of each image per setting")
    ap.add_argument("--resolution", default="64,128", help="comma-separated view sides (px)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    from effssl_jax.methods.recipes import PAPER_VIEW
    rows = []
    for resolution in (int(r) for r in args.resolution.split(",")):
        images = _load(args.data, args.images, resolution, PAPER_VIEW)
        rows.append((resolution, measure(images, resolution, args.views, PAPER_VIEW, args.batch,
                                         args.repeats)))
    print(f"device: {rows[0][1]['device']}; {args.images} images x {args.views} views, "
          f"paper view (SimSiam's recipe) at magnitude 5; timing: batch {args.batch}, median of "
          f"{args.repeats}\n")
    print("| r | mean abs diff (levels) | mean signed diff | pixels > 1 level | pixels > 4 levels"
          " | views: brightness / contrast / saturation moved > 1 level | any "
          "| brightness spread among an image's views |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|")
    for r, m in rows:
        print(f"| {r} | {m['mean_abs']:.2f} | {m['mean_signed']:+.2f} | {100 * m['over_1']:.1f}% "
              f"| {100 * m['over_4']:.2f}% | {100 * m['moved_brightness']:.0f}% / "
              f"{100 * m['moved_contrast']:.0f}% / {100 * m['moved_saturation']:.0f}% "
              f"| {100 * m['moved_any']:.0f}% | {m['spread']:.1f} |")
    print("\n| r | histogram entropy, float / uint8 (bits) | pixels at 0, float / uint8 "
          "| pixels at 255, float / uint8 | ms per batch, float / uint8 | uint8 / float |")
    print("|---:|---|---|---|---|---:|")
    for r, m in rows:
        print(f"| {r} | {m['entropy_float']:.3f} / {m['entropy_uint8']:.3f} "
              f"| {100 * m['zero_float']:.2f}% / {100 * m['zero_uint8']:.2f}% "
              f"| {100 * m['full_float']:.2f}% / {100 * m['full_uint8']:.2f}% "
              f"| {m['ms_float']:.1f} / {m['ms_uint8']:.1f} | {m['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
