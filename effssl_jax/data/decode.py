"""Host decoding: examples of a source -> uint8 arrays, and the record of undecodable examples.

Decoding (data/folder.py's `decode_image`: libjpeg draft mode for big JPEGs, any mode -> RGB,
shorter side resized, a square crop) is the only image work done on the host; every augmentation
happens on the device. An undecodable example never stops a run: it is logged once with its name
and counted in `SKIPPED`, which the run's summary reports (`skipped_images`).
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from effssl_jax.data import folder
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


def decode_examples(source, indices, size: int, offsets=None):
    """(images uint8 [n, size, size, 3], labels int32 [n], ok bool [n]); failed slots are zero.
    `offsets` place each square crop along the longer side (None: centred)."""
    n = len(indices)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.full(n, -1, np.int32)
    ok = np.zeros(n, bool)
    for j, (data, label) in enumerate(source.read(indices)):
        labels[j] = label
        img = folder.decode_image(data, size, 0.5 if offsets is None else float(offsets[j]))
        if img is None:
            report_bad(source.name(int(indices[j])))
        else:
            images[j], ok[j] = img, True
    return images, labels, ok


def decoded_chunks(source, size: int, threads: int, chunk: int):
    """Iterates decode_examples over consecutive chunks of a source, in order, on grain threads."""
    import grain
    n = len(source)
    chunks = grain.MapDataset.range(-(-n // chunk)).map(
        lambda c: decode_examples(source, np.arange(c * chunk, min((c + 1) * chunk, n)), size))
    threads = default_threads(threads)
    return chunks.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                    prefetch_buffer_size=2 * threads))


def load_arrays(source, size: int, threads: int = 0, chunk: int = 64, progress: bool = False,
                desc: str = ""):
    """Decodes a whole source into memory at `size` (centre crops) with grain worker threads.
    Returns (images, labels, skipped names); undecodable examples are left out."""
    n = len(source)
    it = decoded_chunks(source, size, threads, chunk)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=-(-n // chunk), desc=f"decoding {desc}", unit="chunk")
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int32)
    ok = np.empty(n, bool)
    for c, (im, lb, good) in enumerate(it):
        images[c * chunk:c * chunk + len(im)] = im
        labels[c * chunk:c * chunk + len(im)] = lb
        ok[c * chunk:c * chunk + len(im)] = good
    skipped = [source.name(i) for i in np.flatnonzero(~ok)]
    if not ok.any():
        raise DataError(f"none of the {n} images of {desc or 'the dataset'} could be decoded "
                        f"(e.g. {skipped[0]!r}); check that they are valid image files")
    if skipped:
        images, labels = images[ok], labels[ok]
    return images, labels, skipped
