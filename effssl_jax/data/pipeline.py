"""A run's data: splits held in host memory as uint8 arrays, the batch of each step, and the
choice between the in-memory path and the streaming grain loader (data/loader.py).

The order of examples is a pure function of (seed, step): step t reads batch t mod steps_per_epoch
of the permutation of epoch t // steps_per_epoch. A resumed run therefore sees exactly the
examples the uninterrupted run would have seen; the step is the iterator state.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading

import numpy as np

from effssl_jax.data import synthetic
from effssl_jax.data.errors import DataError


@dataclasses.dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int32 [N], -1 when unlabeled
    num_classes: int
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.images)


def in_memory(config) -> bool:
    """Whether the pretraining split is decoded into memory once (synthetic by default: small and
    fast) rather than streamed through grain at each bucket's size (data/loader.py)."""
    if config.data.loader == "auto":
        return config.dataset == "synthetic"
    return config.data.loader == "memory"


def load_split(config, split: str, image_size: int) -> ArrayDataset:
    """A split decoded into memory at image_size x image_size (centre crops).
    split: 'train' (pretraining), 'bank' (labelled kNN / probe memory bank) or 'eval'."""
    from effssl_jax.data import datasets, loader, sources
    info = datasets.info_for(config.dataset)
    if config.dataset == "synthetic":
        n = config.synthetic_train_size if split != "eval" else config.synthetic_test_size
        images, labels = synthetic.make_synthetic("train" if split != "eval" else "test", n,
                                                  image_size=image_size, seed=config.seed)
        return ArrayDataset(images, labels, int(labels.max()) + 1)
    source = sources.open_source(config, split)
    where = getattr(source, "root", None) or getattr(source, "description", config.dataset)
    if len(source) == 0:
        raise DataError(f"the {split} split of {where} is empty; prepare it again or pick "
                        "another --config.dataset")
    images, labels, skipped = loader.load_arrays(source, image_size, config.data.threads,
                                                 progress=config.progress_bar, desc=where)
    if skipped:
        logging.warning("%d of %d images in %s could not be decoded and are skipped",
                        len(skipped), len(source), where)
    num_classes = info.num_classes or source.num_classes or int(labels.max()) + 1
    return ArrayDataset(images, labels, max(num_classes, 1), skipped)


def pretrain_size(config) -> int:
    """Number of pretraining images (without decoding them)."""
    if config.dataset == "synthetic":
        return config.synthetic_train_size
    from effssl_jax.data import sources
    return len(sources.open_source(config, "train"))


def open_run_data(config, image_size: int):
    """(pretraining data, memory bank, eval split) of a run. The pretraining data is an
    ArrayDataset when in_memory(config), else a random-access source for the grain loader; the
    bank and eval splits are decoded into memory at image_size for the online kNN."""
    from effssl_jax.data import datasets, sources
    info = datasets.info_for(config.dataset)
    if in_memory(config):
        train = load_split(config, "train", image_size)
        bank = train if info.bank_split == info.train_split else \
            load_split(config, "bank", image_size)
    else:
        train = sources.open_source(config, "train")
        if len(train) == 0:
            raise DataError(f"the train split of {config.dataset} is empty; prepare it again "
                            "or pick another --config.dataset")
        bank = load_split(config, "bank", image_size)
    return train, bank, load_split(config, "eval", image_size)


def make_loader(config, train, plan, process_index: int = 0, process_count: int = 1):
    """The iterator of (step, this host's uint8 batch) over a run's plan; see data/loader.py."""
    from effssl_jax.data import loader
    sampler = loader.Sampler(len(train), config.batch_size, config.seed, process_index,
                             process_count)
    if isinstance(train, ArrayDataset):
        return loader.MemoryLoader(train, sampler, plan.total_steps, config.prefetch)
    sizes = loader.host_sizes(plan, config.data.host_margin, config.image_size)
    return loader.GrainLoader(train, sampler, sizes, plan.total_steps, config.data.threads,
                              config.data.processes, config.prefetch)


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
