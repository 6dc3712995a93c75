"""Datasets held in host memory as uint8 arrays, and the batch of each step.

The order of examples is a pure function of (seed, step): step t reads batch t mod steps_per_epoch
of the permutation of epoch t // steps_per_epoch. A resumed run therefore sees exactly the
examples the uninterrupted run would have seen, with nothing but the step to checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading

import numpy as np

from effssl_jax.data import folder, synthetic
from effssl_jax.data.errors import DataError

SPLIT_DIRS = {"train": ("train",), "eval": ("val", "validation", "test")}


@dataclasses.dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int32 [N], -1 when unlabeled
    num_classes: int
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.images)


def _folder_root(config) -> str | None:
    if config.dataset.startswith("folder:"):
        return config.dataset.split(":", 1)[1]
    if config.dataset == "imagenette":
        return config.data_dir or None
    return None


def load_split(config, split: str, image_size: int) -> ArrayDataset:
    """split: 'train' or 'eval'. Images decoded and resized to image_size x image_size."""
    if config.dataset == "synthetic":
        n = config.synthetic_train_size if split == "train" else config.synthetic_test_size
        images, labels = synthetic.make_synthetic("train" if split == "train" else "test", n,
                                                  image_size=image_size, seed=config.seed)
        return ArrayDataset(images, labels, int(labels.max()) + 1)
    root = _folder_root(config)
    if root is None:
        raise DataError(f"dataset {config.dataset!r} is not available here; use "
                        "--config.dataset=synthetic, folder:PATH, or imagenette with "
                        "--config.data_dir=PATH_WITH_train_AND_val")
    if not os.path.isdir(root):
        raise DataError(f"data folder {root!r} does not exist; pass --config.dataset=folder:PATH "
                        "(or --config.data_dir for imagenette) or --config.dataset=synthetic")
    split_root = next((os.path.join(root, d) for d in SPLIT_DIRS[split]
                       if os.path.isdir(os.path.join(root, d))), None)
    if split_root is None:
        raise DataError(f"{root!r} has no {'/'.join(SPLIT_DIRS[split])} folder for the {split} "
                        f"split; expected {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg")
    images, labels, class_names, skipped = folder.load_folder_arrays(
        split_root, image_size, progress=config.progress_bar)
    for path in skipped:
        logging.warning("skipped undecodable image %s", path)
    if skipped:
        logging.warning("%d of %d images in %s could not be decoded and are skipped",
                        len(skipped), len(skipped) + len(images), split_root)
    return ArrayDataset(images, labels, max(len(class_names), 1), skipped)


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Global example indices of a step's batch (a fresh permutation every epoch; the last
    incomplete batch of an epoch is dropped)."""
    steps_per_epoch = num_examples // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size:(position + 1) * batch_size]


def local_batch(dataset: ArrayDataset, step: int, batch_size: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This host's share of a step's global batch: a contiguous slice, disjoint across hosts."""
    idx = batch_indices(step, len(dataset), batch_size, seed)
    per_host = batch_size // process_count
    return dataset.images[idx[process_index * per_host:(process_index + 1) * per_host]]


class Prefetcher:
    """Runs `produce(step)` for steps start..end-1 on a background thread, `depth` ahead.
    Iterating yields (step, item); an exception in `produce` is raised in the consumer."""

    _END = object()

    def __init__(self, produce, start: int, end: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce, start, end), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce, start, end):
        try:
            for step in range(start, end):
                if not self._put((step, produce(step))):
                    return
            self._put(self._END)
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self._stop.set()
