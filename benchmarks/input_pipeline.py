"""What keeping whole images costs the host: decode rate and bytes per image, vs before, vs torch.

    python benchmarks/input_pipeline.py                  # 256 made 500x375 JPEGs, 224 and 96 px
    python benchmarks/input_pipeline.py --make-jpegs 0 --data /data/imagenet/train --images 2000

Why: the host no longer crops a small square for the device to crop in; it decodes each image whole
and sends it in a canvas so the device can draw torchvision's RandomResizedCrop boxes from it
(data/canvas.py). This measures what that costs the host's CPUs and the link to the device, next to
the old square and to torchvision's own loader.

For each resolution r (views drawn with crop scales from --min-scale, default SimSiam's 0.2, aspect
ratios up to 4/3), three host transforms decode the same JPEG files:
- old: the host square the grain loader made before whole images (data/canvas.py): shorter side
  S = max(r, 8 round(r (8/7) / 8)) (224 -> 256, 96 -> 112), libjpeg draft mode to (2S, 2S), one
  bicubic resize (reducing_gap=3.0) of an S x S square at a random offset along the longer side,
  reimplemented here as the old `folder.decode_image` did it; the device then cropped inside it.
- new: the library's `folder.WholeImage(canvas.host_size(r, min_scale, 4/3, 4/3))`, as the grain
  loader's `HostBatch` calls it: the whole image, shorter side at most `short`, in a canvas square.
- torchvision: `DataLoader(ImageFolder(..., RandomResizedCrop(r, scale=(min_scale, 1)) +
  ToTensor()), num_workers=cores)`, the standard PyTorch training input.
old and new run as a plain loop over the file paths on `--cores` threads (a ThreadPoolExecutor;
PIL releases the GIL while decoding and resizing; grain's machinery adds no image work); the
DataLoader runs `--cores` worker processes (persistent; its first epoch is not timed). The three
take turns, --repeats passes each over the same --images files, and the best pass is printed as
decoded images/s per core (wall-clock images/s / cores) and as images per CPU second used (the
process's threads, or the DataLoader's workers and main process, read from /proc): the latter
varies much less when other processes share the cores. Bytes per image are what each sends to the
device: old S*S*3 uint8, new canvas*canvas*3 uint8 + 8 (its int32 height, width), torchvision
r*r*3*4 float32 (ToTensor; r*r*3 as uint8 with PILToTensor).

Data: ImageNet's typical files are 500x375 JPEGs, larger than the 224 px views and not square, which
is where the host's work differs; --make-jpegs N (default 256) writes N of them (every 4th 375x500)
into a temporary folder from the Imagenette images of --data (160x160 squares whose central 4:3 box
is upsampled: smoother and smaller files than photos, whose ImageNet average is ~110 kB, so likely a
little faster to decode; their mean size is printed). --make-jpegs 0 times the files of --data.

The loader-vs-train-step table of earlier versions (grain loader images/s per bucket next to the
compiled ResNet-18 SimSiam step's) was dropped: it compiled a step per bucket, minutes on a CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                            "shared", "data", "imagenette2-160")


@dataclasses.dataclass(frozen=True)
class OldSquare:
    """The old host transform: uint8 [S, S, 3], a square of the image resized to S x S."""
    size: int

    def __call__(self, path):
        s = self.size
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(None, (2 * s, 2 * s))
            im = im if im.mode == "RGB" else im.convert("RGB")
            w, h = im.size
            side, offset = min(w, h), random.random()
            x0, y0 = (w - side) * offset, (h - side) * offset
            im = im.resize((s, s), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side),
                           reducing_gap=3.0)
            return np.asarray(im, np.uint8)


def make_jpegs(src: str, dst: str, n: int, seed: int = 0) -> list[str]:
    """Writes n 500x375 JPEGs (every 4th 375x500) into dst/<class>/ from the images under src."""
    files = sorted(glob.glob(os.path.join(src, "*", "*")))
    if not files:
        sys.exit(f"no images under {src}: pass --data (a folder with class folders or train/)")
    picks = random.Random(seed).sample(files, min(n, len(files)))
    out = []
    for i, f in enumerate(picks):
        with Image.open(f) as im:
            im = im.convert("RGB")
            w, h = (375, 500) if i % 4 == 3 else (500, 375)
            s = min(im.width / w, im.height / h)  # the central box of aspect w:h
            cw, ch = w * s, h * s
            box = ((im.width - cw) / 2, (im.height - ch) / 2, (im.width + cw) / 2,
                   (im.height + ch) / 2)
            im = im.resize((w, h), Image.Resampling.BICUBIC, box=box)
        path = os.path.join(dst, os.path.basename(os.path.dirname(f)), f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        im.save(path, quality=90)
        out.append(path)
    return sorted(out)


def cpu_seconds(pids=()) -> float:
    """CPU seconds used so far by this process (all its threads) and by the processes `pids`."""
    t = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        t += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return t


def thread_pass(pool, transform, paths):
    """(a pass of `transform` over `paths` on the thread pool, no child pids), warmed up."""
    list(pool.map(transform, paths[:8]))

    def run():
        for _ in pool.map(transform, paths):
            pass
    return run, ()


def torchvision_pass(root, paths, r, min_scale, cores, batch):
    """(an epoch of a torchvision DataLoader over `paths`, its worker pids), workers started."""
    import torch
    from torchvision import datasets, transforms
    ds = datasets.ImageFolder(root, transforms.Compose([
        transforms.RandomResizedCrop(r, scale=(min_scale, 1.0)), transforms.ToTensor()]))
    keep = set(paths)
    ds = torch.utils.data.Subset(ds, [i for i, (p, _) in enumerate(ds.samples) if p in keep])
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=cores,
                                     persistent_workers=True)

    def run():
        for x, _ in dl:
            assert x.dtype == torch.float32 and x.shape[1:] == (3, r, r)
    run()  # starts the workers, not timed
    return run, [w.pid for w in dl._iterator._workers]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="image folder (with train/, or class "
                   "folders): the source of --make-jpegs, or the files timed with --make-jpegs 0")
    p.add_argument("--make-jpegs", type=int, default=256, help="N made 500x375 JPEGs (0: --data)")
    p.add_argument("--resolutions", default="224,96")
    p.add_argument("--min-scale", type=float, default=0.2, help="smallest crop scale (SimSiam's)")
    p.add_argument("--images", type=int, default=0, help="timed images per pass (0: all)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes; the best is printed")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                   help="threads (old, new) and DataLoader workers (torchvision)")
    p.add_argument("--batch", type=int, default=32, help="DataLoader batch size")
    args = p.parse_args(argv)
    from effssl_jax.data import canvas, folder

    data = os.path.join(args.data, "train") if os.path.isdir(
        os.path.join(args.data, "train")) else args.data
    resolutions = [int(r) for r in args.resolutions.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.cores) as pool:
        root = tmp if args.make_jpegs else data
        paths = make_jpegs(data, tmp, args.make_jpegs) if args.make_jpegs else \
            folder.scan_folder(data)[0]
        paths = paths[:args.images] if args.images else paths
        sizes = [Image.open(f).size for f in paths[:200]]
        kb = np.mean([os.path.getsize(f) for f in paths]) / 1e3
        print(f"{len(paths)} files {'made from' if args.make_jpegs else 'of'} {data}: "
              f"{sum(w > h for w, h in sizes)}/{len(sizes)} landscape, median (w, h) "
              f"{sorted(sizes)[len(sizes) // 2]}, mean {kb:.0f} kB; {args.cores} threads / "
              f"workers, best of {args.repeats} interleaved passes", flush=True)
        for r in resolutions:
            s = max(r, 8 * round(r * (8 / 7) / 8))
            size = canvas.host_size(r, args.min_scale, 4 / 3, 4 / 3)
            cases = {  # name: (sent to device, bytes per image, (run, pids))
                f"old: square S={s}": (f"{s}x{s} uint8", s * s * 3,
                                       thread_pass(pool, OldSquare(s), paths)),
                f"new: WholeImage short {size.short}, canvas {size.canvas}": (
                    f"{size.canvas}x{size.canvas} uint8 + 2 int32", size.canvas ** 2 * 3 + 8,
                    thread_pass(pool, folder.WholeImage(size), paths)),
                "torchvision RRC + ToTensor": (
                    f"{r}x{r} float32 (uint8: {r * r * 3:,} B)", r * r * 3 * 4,
                    torchvision_pass(root, paths, r, args.min_scale, args.cores, args.batch))}
            wall, cpu = dict.fromkeys(cases, float("inf")), dict.fromkeys(cases, float("inf"))
            for _ in range(args.repeats):  # interleaved: a burst of load hits every case
                for name, (_, _, (run, pids)) in cases.items():
                    t0, c0 = time.perf_counter(), cpu_seconds(pids)
                    run()
                    c1, t1 = cpu_seconds(pids), time.perf_counter()
                    wall[name], cpu[name] = min(wall[name], t1 - t0), min(cpu[name], c1 - c0)
            rows += [(r, name, sent, len(paths) / wall[name] / args.cores,
                      len(paths) / cpu[name], nbytes)
                     for name, (sent, nbytes, _) in cases.items()]
            del cases  # shuts the DataLoader's workers down
            print(f"{r} px done", flush=True)
    print(f"\nmin_scale {args.min_scale}, aspect 4/3; img/s per core = decoded img/s (wall) / "
          f"{args.cores}; img per CPU-s = images / CPU seconds used (threads, or DataLoader "
          "workers + main); ratios: the new row's / this row's")
    print("| r | host transform | sent to device | img/s per core | img per CPU-s | bytes / image "
          "| new/this img/s | new/this img per CPU-s | new/this bytes |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r, name, sent, rate, per_cpu, nbytes in rows:
        new = next(row for row in rows if row[0] == r and row[1].startswith("new"))
        print(f"| {r} | {name} | {sent} | {rate:.0f} | {per_cpu:.0f} | {nbytes:,} | "
              f"{new[3] / rate:.2f}x | {new[4] / per_cpu:.2f}x | {new[5] / nbytes:.2f}x |")


if __name__ == "__main__":
    main()
