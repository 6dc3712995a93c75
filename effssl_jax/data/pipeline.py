"""A run's data, the one module training and evaluation call: splits decoded into host memory as
uint8 arrays, the pretraining data, and the loader of each step's batch.

Data flows one way: the dataset table (datasets.py) -> sources of encoded images (sources.py,
folder.py; synthetic.py generates its arrays) -> the data order and host sharding (order.py) ->
decoding (decode.py) and the loaders (grain_loader.py streams, memory_loader.py serves arrays,
device_loader.py serves them from device memory) ->
here. No other data module imports this one.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from effssl_jax.data import (
    datasets,
    decode,
    device_loader,
    grain_loader,
    memory_loader,
    sources,
    synthetic,
)
from effssl_jax.data.errors import DataError
from effssl_jax.data.order import Sampler


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
    fast; `device` uploads it from there) rather than streamed through grain at each bucket's size
    (data/grain_loader.py)."""
    if config.data.loader == "auto":
        return config.dataset == "synthetic"
    return config.data.loader in ("memory", "device")


def _synthetic_split(config, split: str, image_size: int) -> ArrayDataset:
    n = config.synthetic_train_size if split != "eval" else config.synthetic_test_size
    images, labels = synthetic.make_synthetic("train" if split != "eval" else "test", n,
                                              image_size=image_size, seed=config.seed)
    return ArrayDataset(images, labels, int(labels.max()) + 1)


def _subset(n: int, limit: int, seed: int) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of `limit` of n examples (None: all of them)."""
    if not limit or limit >= n:
        return None
    return np.sort(np.random.default_rng([seed, 2]).choice(n, limit, replace=False))


def _limited(data: ArrayDataset, limit: int, seed: int) -> ArrayDataset:
    """`data`, or its fixed random subset of `limit` examples (_subset)."""
    chosen = _subset(len(data), limit, seed)
    return data if chosen is None else dataclasses.replace(
        data, images=data.images[chosen], labels=data.labels[chosen])


def load_split(config, split: str, image_size: int, limit: int = 0) -> ArrayDataset:
    """A split decoded into memory at image_size x image_size (centre crops); `limit` > 0: a
    fixed random subset of that many examples (seeded by config.seed), the rest never decoded.
    split: 'train' (pretraining), 'bank' (labelled kNN / probe memory bank) or 'eval'."""
    info = datasets.info_for(config.dataset)
    if config.dataset == "synthetic":
        return _limited(_synthetic_split(config, split, image_size), limit, config.seed)
    source = sources.open_source(config, split)
    where = getattr(source, "root", None) or getattr(source, "description", config.dataset)
    if len(source) == 0:
        raise DataError(f"the {split} split of {where} is empty; prepare it again or pick "
                        "another --config.dataset")
    num_classes = info.num_classes or source.num_classes
    if (chosen := _subset(len(source), limit, config.seed)) is not None:
        source = decode.Subset(source, chosen)
    images, labels, skipped = decode.load_arrays(source, image_size, config.data.threads,
                                                 progress=config.progress_bar, desc=where)
    if skipped:
        logging.warning("%d of %d images in %s could not be decoded and are skipped",
                        len(skipped), len(source), where)
    num_classes = num_classes or int(labels.max()) + 1
    return ArrayDataset(images, labels, max(num_classes, 1), skipped)


def _stream_source(config):
    """The pretraining split's source, read by the grain loader."""
    train = sources.open_source(config, "train")
    if len(train) == 0:
        raise DataError(f"the train split of {config.dataset} is empty; prepare it again "
                        "or pick another --config.dataset")
    return train


def host_share(num_examples: int, process_index: int, process_count: int) -> range:
    """The contiguous part of a split's examples that host p of P decodes for evaluation."""
    return range(num_examples * process_index // process_count,
                 num_examples * (process_index + 1) // process_count)


def stream_split(config, split: str, image_size: int, process_index: int = 0,
                 process_count: int = 1, chunk: int = 64):
    """(iterator of (uint8 images, labels) chunks, number of examples, number of classes): this
    host's share of a split decoded `chunk` examples at a time (centre crops), for evaluation at
    any dataset size: the split is never whole in memory (except `synthetic`, generated in
    memory). Undecodable examples are left out, as in load_split."""
    info = datasets.info_for(config.dataset)
    if config.dataset == "synthetic":
        data = _synthetic_split(config, split, image_size)
        share = host_share(len(data), process_index, process_count)
        chunks = ((data.images[i:min(i + chunk, share.stop)],
                   data.labels[i:min(i + chunk, share.stop)])
                  for i in range(share.start, share.stop, chunk))
        return chunks, len(share), data.num_classes
    source = sources.open_source(config, split)
    if len(source) == 0:
        raise DataError(f"the {split} split of {config.dataset} is empty; prepare it again or "
                        "pick another --config.dataset")
    share = host_share(len(source), process_index, process_count)
    part = decode.Subset(source, share)
    chunks = ((im[ok], lb[ok]) for im, lb, ok in
              decode.decoded_chunks(part, image_size, config.data.threads, chunk))
    num_classes = info.num_classes or source.num_classes
    return chunks, len(share), max(num_classes or 1, 1)


def num_train_examples(config) -> int:
    """The pretraining split's size, without decoding it (train.py's check for a finished run). An
    in-memory split can be smaller once decoded: the images it cannot decode are left out."""
    if config.dataset == "synthetic":
        return config.synthetic_train_size
    return len(sources.open_source(config, "train"))


def open_run_data(config, image_size: int):
    """(pretraining data, memory bank, eval split) of a run. The pretraining data is an
    ArrayDataset when in_memory(config), else a random-access source for the grain loader; the
    bank and eval splits (at most eval.online_subset images each) are decoded into memory at
    image_size for the online kNN."""
    info = datasets.info_for(config.dataset)
    limit = config.eval.online_subset
    if in_memory(config):
        train = load_split(config, "train", image_size)
        if info.bank_split != info.train_split:
            bank = load_split(config, "bank", image_size, limit)
        else:
            bank = _limited(train, limit, config.seed)
    else:
        train = _stream_source(config)
        bank = load_split(config, "bank", image_size, limit)
    return train, bank, load_split(config, "eval", image_size, limit)


def make_loader(config, train, plan, mesh, process_index: int = 0, process_count: int = 1):
    """The iterator of (step, uint8 batch) over a run's plan: a DeviceLoader (global batches on
    `mesh`) with data.loader=device, a MemoryLoader over an ArrayDataset, else a GrainLoader over
    a source at each bucket's host size (these two give this host's batch as numpy)."""
    sampler = Sampler(len(train), config.batch_size, config.seed, process_index, process_count)
    if config.data.loader == "device":
        return device_loader.DeviceLoader(train.images, sampler, plan.total_steps, mesh,
                                          config.prefetch)
    if isinstance(train, ArrayDataset):
        return memory_loader.MemoryLoader(train.images, sampler, plan.total_steps,
                                          config.prefetch)
    sizes = grain_loader.host_sizes(plan, config.data.host_margin, config.image_size)
    return grain_loader.GrainLoader(train, sampler, sizes, plan.total_steps, config.data.threads,
                                    config.data.processes, config.prefetch)
