"""Image-folder source: ``root/<class>/*.jpg`` (or a flat unlabeled folder) decoded
to fixed-size uint8 arrays held in memory. Augmentation happens later, on device."""
from __future__ import annotations

import io
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

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


def _images_under(directory: str, exts: frozenset[str]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f, exts)]
    return found


def scan_folder(root: str, extensions=IMAGE_EXTENSIONS,
                ) -> tuple[list[str], np.ndarray, list[str]]:
    """Lists images as ``(paths, labels int32, class_names)``, sorted and deterministic.

    Each non-hidden subfolder of ``root`` holding images is a class (searched
    recursively; classes sorted by name). Images placed directly in ``root``
    instead make an unlabeled set: labels are all -1 and class_names is [].
    """
    if not os.path.isdir(root):
        raise DataError(f"data_dir {root!r} does not exist; pass --config.data_dir=... "
                        "or --config.dataset=synthetic")
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    flat = [e.path for e in entries if e.is_file() and _is_image(e.name, exts)]
    per_class = {e.name: _images_under(e.path, exts)
                 for e in entries if e.is_dir() and not e.name.startswith(".")}
    per_class = {name: files for name, files in per_class.items() if files}

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


def decode_image(path_or_bytes: str | bytes, size: int, offset: float = 0.5) -> np.ndarray | None:
    """Decodes to RGB uint8 ``[size, size, 3]``: shorter side resized to ``size``
    (bicubic), then a square crop, centred (``offset`` 0.5) or at ``offset`` in [0, 1] along the
    longer side. Returns None if the file cannot be decoded."""
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        with Image.open(src) as im:
            if im.format == "JPEG":
                # Let libjpeg downscale by 2/4/8 while decoding, keeping >= 2x the
                # target so the bicubic pass still antialiases: a large speed-up
                # for big photos, a no-op for sources under 2 * size.
                im.draft(None, (2 * size, 2 * size))
            im = _to_rgb(im)
            w, h = im.size
            side = min(w, h)
            x0, y0 = (w - side) * offset, (h - side) * offset
            box = (x0, y0, x0 + side, y0 + side)
            im = im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, np.uint8)
    except _DECODE_ERRORS:
        return None


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
