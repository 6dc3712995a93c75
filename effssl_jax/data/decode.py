"""Host decoding: examples of a source -> uint8 arrays, and the record of undecodable examples.

Decoding with one of data/folder.py's transforms (libjpeg draft mode for big JPEGs, any mode ->
RGB): `WholeImage` for training (the whole image in a canvas, data/canvas.py) or `CenterCrop` for
evaluation, is the only image work done on the host; every augmentation happens on the device.
An undecodable example never stops a run: it is logged once with its name and counted in
`SKIPPED`, which the run's summary reports (`skipped_images`).
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from effssl_jax.data.errors import DataError

log = logging.getLogger(__name__)

SKIPPED: dict[str, None] = {}  # names of the undecodable examples this process has met
_SKIPPED_LOCK = threading.Lock()


def report_bad(name: str) -> None:
    """Counts an undecodable example and logs it the first time it is met."""
    with _SKIPPED_LOCK:
        if name in SKIPPED:
            return
        SKIPPED[name] = None
    log.warning("skipped undecodable image %s", name)


def default_threads(threads: int) -> int:
    """Decode threads per host: `threads` if set, else min(16, CPUs)."""
    return threads or max(1, min(16, os.cpu_count() or 1))


class Subset:
    """The examples `indices` (a range or array) of a source, as a source."""

    def __init__(self, source, indices):
        self.source, self.indices = source, indices
        self.num_classes = getattr(source, "num_classes", 0)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, indices):
        return self.source.read([self.indices[int(i)] for i in indices])

    def name(self, i: int) -> str:
        return self.source.name(self.indices[int(i)])


def decode_examples(source, indices, transform):
    """(pixels uint8 [n, S, S, 3], sizes int32 [n, 2], labels int32 [n], ok bool [n]) of the
    examples `indices` through `transform` (folder.WholeImage or folder.CenterCrop, whose output
    is S x S); failed slots are zero."""
    n = len(indices)
    pixels = np.zeros((n, transform.side, transform.side, 3), np.uint8)
    sizes, labels, ok = np.zeros((n, 2), np.int32), np.full(n, -1, np.int32), np.zeros(n, bool)
    for j, (data, label) in enumerate(source.read(indices)):
        labels[j] = label
        out = transform(data)
        if out is None:
            report_bad(source.name(int(indices[j])))
            continue
        pixels[j], sizes[j], ok[j] = out[0], out[1], True
    return pixels, sizes, labels, ok


def decoded_chunks(source, transform, threads: int, chunk: int):
    """Iterates decode_examples over consecutive chunks of a source, in order, on grain threads."""
    import grain
    n = len(source)
    chunks = grain.MapDataset.range(-(-n // chunk)).map(
        lambda c: decode_examples(source, np.arange(c * chunk, min((c + 1) * chunk, n)),
                                  transform))
    threads = default_threads(threads)
    return chunks.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                    prefetch_buffer_size=2 * threads))


def load_arrays(source, transform, threads: int = 0, chunk: int = 64, progress: bool = False,
                desc: str = ""):
    """Decodes a whole source into memory through `transform` with grain worker threads.
    Returns (pixels, sizes, labels, skipped names); undecodable examples are left out."""
    n = len(source)
    it = decoded_chunks(source, transform, threads, chunk)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=-(-n // chunk), desc=f"decoding {desc}", unit="chunk")
    pixels = np.empty((n, transform.side, transform.side, 3), np.uint8)
    sizes, labels, ok = np.empty((n, 2), np.int32), np.empty(n, np.int32), np.empty(n, bool)
    for c, (px, sz, lb, good) in enumerate(it):
        part = slice(c * chunk, c * chunk + len(px))
        pixels[part], sizes[part], labels[part], ok[part] = px, sz, lb, good
    skipped = [source.name(i) for i in np.flatnonzero(~ok)]
    if not ok.any():
        raise DataError(f"none of the {n} images of {desc or 'the dataset'} could be decoded "
                        f"(e.g. {skipped[0]!r}); check that they are valid image files")
    if skipped:
        pixels, sizes, labels = pixels[ok], sizes[ok], labels[ok]
    return pixels, sizes, labels, skipped
