"""Image-folder source: ``root/<class>/*.jpg`` (or a flat unlabeled folder) decoded
to fixed-size uint8 arrays held in memory. Augmentation happens later, on device."""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from effssl_jax import storage
from effssl_jax.data import canvas
from effssl_jax.data.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# What PIL raises on corrupt, truncated or hostile input (UnidentifiedImageError
# is an OSError). ImageFile.LOAD_TRUNCATED_IMAGES is deliberately left False so
# truncated files raise here and get skipped instead of decoding half-grey.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError,
                  TypeError, ZeroDivisionError, Image.DecompressionBombError)


def _is_image(name: str, exts: frozenset[str]) -> bool:
    # Hidden files include macOS "._x.jpg" resource forks, which are not images.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in exts


def _walk_order(relpath: str) -> tuple:
    """os.walk's top-down order: a folder's files (sorted) before its subfolders' (sorted)."""
    *folders, name = relpath.split("/")
    return tuple(folders), name


def scan_folder(root: str, extensions=IMAGE_EXTENSIONS,
                ) -> tuple[list[str], np.ndarray, list[str]]:
    """Lists images as ``(paths, labels int32, class_names)``, sorted and deterministic.

    Each non-hidden subfolder of ``root`` holding images is a class (searched
    recursively; classes sorted by name). Images placed directly in ``root``
    instead make an unlabeled set: labels are all -1 and class_names is [].
    ``root`` may be in a bucket (gs://...; storage.py): one listing of it.
    """
    if not storage.isdir(root):
        raise DataError(f"data_dir {root!r} does not exist; pass --config.data_dir=... "
                        "or --config.dataset=synthetic")
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    files = sorted((f for f in storage.files_under(root)
                    if not any(part.startswith(".") for part in f.split("/")[:-1])
                    and _is_image(f.rsplit("/", 1)[-1], exts)), key=_walk_order)
    flat = [storage.join(root, f) for f in files if "/" not in f]
    per_class: dict[str, list[str]] = {}
    for f in (f for f in files if "/" in f):  # grouped by class, classes sorted
        per_class.setdefault(f.split("/", 1)[0], []).append(storage.join(root, f))
    if flat and per_class:
        raise DataError(f"{root!r} has images both directly inside it and in class "
                        "subfolders; use root/<class>/*.jpg, or a flat folder for unlabeled data")
    if flat:
        return flat, np.full(len(flat), -1, np.int32), []
    if not per_class:
        raise DataError(f"{root!r} contains no images with extensions {sorted(exts)}; "
                        "expected root/<class>/*.jpg")
    class_names = list(per_class)
    paths = [p for name in class_names for p in per_class[name]]
    labels = np.concatenate([np.full(len(per_class[n]), i, np.int32)
                             for i, n in enumerate(class_names)])
    return paths, labels, class_names


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (L stays L: resizing one channel is cheaper; see decode_image)."""
    if im.mode in ("RGB", "L"):
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # convert() would clip 16-bit values at 255 (all white); rescale instead.
        a = np.asarray(im, np.float32)
        peak = 255.0 if a.max() <= 255 else 65535.0 if a.max() <= 65535 else float(a.max())
        return Image.fromarray(np.clip(a * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # Composite on black so hidden colour under transparent pixels never shows.
        rgba = np.asarray(im.convert("RGBA"), np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8))
    return im.convert("RGB")  # P, 1, CMYK, YCbCr, ...


def _load(src, target, draft: bool = True):
    """(the RGB or L image of a path or bytes, (height, width) it is to be resized to), where
    target(height, width) of the file gives the latter. With `draft`, a JPEG is decoded by
    libjpeg's draft mode at the smallest power-of-two reduction that keeps it at least twice that
    size: a large speed-up for big photos, a no-op for files under twice the size they are
    resized to."""
    if isinstance(src, str) and storage.is_remote(src):
        src = storage.read_bytes(src)  # an image in a bucket
    im = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
    w0, h0 = im.size
    h, w = target(h0, w0)
    if draft and im.format == "JPEG":
        im.draft(None, (2 * w, 2 * h))
    return _to_rgb(im), (h, w)


def _rgb_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), np.uint8)


@dataclasses.dataclass(frozen=True)
class WholeImage:
    """The training transform of the host: the whole image, aspect ratio kept, its sides fitted
    to `size` (canvas.fit; bicubic, antialiased) and padded at the top-left of the canvas.
    Called on a path or bytes: (uint8 [C, C, 3], (height, width)), or None if undecodable."""
    size: canvas.HostSize

    @property
    def side(self) -> int:
        return self.size.canvas

    def __call__(self, src):
        try:
            im, (h, w) = _load(src, lambda h0, w0: canvas.fit(h0, w0, self.size))
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
            out = np.zeros((self.size.canvas, self.size.canvas, 3), np.uint8)
            out[:h, :w] = _rgb_array(im)
            return out, (h, w)
        except _DECODE_ERRORS:
            return None


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's `Resize(size)` output (height, width): the shorter side `size`, the longer
    one scaled and truncated (transforms.functional._compute_resized_output_size)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


@dataclasses.dataclass(frozen=True)
class CenterCrop:
    """The evaluation transform, torchvision's `Resize(round(r / crop_fraction))` +
    `CenterCrop(r)` on a PIL image: the shorter side resized (bilinear, antialiased) from the
    file's full resolution (no draft decoding: the pixels are torchvision's), then the central
    r x r square, so a view is never an upsampled crop. Called on a path or bytes:
    (uint8 [r, r, 3], (r, r)), or None if undecodable."""
    resolution: int
    crop_fraction: float = 0.875

    @property
    def side(self) -> int:
        return self.resolution

    def __call__(self, src):
        r = self.resolution
        try:
            im, (h, w) = _load(src, lambda h0, w0: resized_size(
                h0, w0, round(r / self.crop_fraction)), draft=False)
            im = im.resize((w, h), Image.Resampling.BILINEAR)
            top, left = int(round((h - r) / 2.0)), int(round((w - r) / 2.0))
            return _rgb_array(im.crop((left, top, left + r, top + r))), (r, r)
        except _DECODE_ERRORS:
            return None


def decode_image(src, size: int) -> np.ndarray | None:
    """The central `size` x `size` square of an image (CenterCrop(size, crop_fraction=1)):
    uint8 [size, size, 3], or None if it cannot be decoded."""
    out = CenterCrop(size, 1.0)(src)
    return None if out is None else out[0]


def load_folder_arrays(root: str, size: int, num_workers: int | None = None,
                       progress: bool = True,
                       ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decodes every image of ``scan_folder(root)`` into memory.

    Returns ``(images uint8 [N,size,size,3], labels int32 [N], class_names,
    skipped)`` where ``skipped`` lists the paths that failed to decode (left
    out of ``images``/``labels``). Decoding runs in a thread pool (PIL releases
    the GIL); ``num_workers`` defaults to ``os.cpu_count()``.
    """
    paths, labels, class_names = scan_folder(root)
    images = np.empty((len(paths), size, size, 3), np.uint8)

    def work(i: int) -> bool:
        arr = decode_image(paths[i], size)
        if arr is None:
            return False
        images[i] = arr
        return True

    with ThreadPoolExecutor(num_workers or os.cpu_count() or 1) as pool:
        results = pool.map(work, range(len(paths)))
        if progress:
            from tqdm.auto import tqdm
            results = tqdm(results, total=len(paths), desc=f"decoding {root}", unit="img")
        ok = np.fromiter(results, bool, count=len(paths))

    skipped = [p for p, good in zip(paths, ok) if not good]
    if not ok.any():
        raise DataError(f"none of the {len(paths)} images under {root!r} could be decoded "
                        f"(e.g. {skipped[0]!r}); check that they are valid image files")
    if skipped:
        log.warning("skipped %d undecodable image(s) under %s, e.g. %s",
                    len(skipped), root, skipped[0])
        images, labels = images[ok], labels[ok]
    return images, labels, class_names, skipped
