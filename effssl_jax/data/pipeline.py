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

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax.data import (
    canvas,
    datasets,
    decode,
    device_loader,
    folder,
    grain_loader,
    memory_loader,
    sources,
    synthetic,
)
from effssl_jax.data.errors import DataError
from effssl_jax.data.order import Sampler


@dataclasses.dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 [N, S, S, 3]: evaluation crops, or whole images in a canvas
    labels: np.ndarray  # int32 [N], -1 when unlabeled
    num_classes: int
    skipped: list[str] = dataclasses.field(default_factory=list)
    sizes: np.ndarray | None = None  # int32 [N, 2]: each image's valid (height, width)

    def __len__(self):
        return len(self.images)

    def whole_images(self) -> canvas.Images:
        """The images with their valid sizes (all of the canvas where none are recorded)."""
        if self.sizes is None:
            return canvas.Images.full(self.images)
        return canvas.Images(self.images, self.sizes)


def in_memory(config) -> bool:
    """Whether the pretraining split is decoded into memory once (synthetic by default: small and
    fast; `device` uploads it from there) rather than streamed through grain at each bucket's size
    (data/grain_loader.py)."""
    if config.data.loader == "auto":
        return config.dataset == "synthetic"
    return config.data.loader in ("memory", "device")


def eval_transform(config, resolution: int) -> folder.CenterCrop:
    """The evaluation transform of a run: torchvision's Resize + CenterCrop at `resolution`."""
    return folder.CenterCrop(resolution, config.eval.crop_fraction)


def _synthetic_split(config, split: str, transform) -> ArrayDataset:
    """The generated split, drawn as a file of any size would be kept: for training at the host's
    shorter side (square images fill their canvas), for evaluation at the evaluation's resize and
    centre-cropped."""
    n = config.synthetic_train_size if split != "eval" else config.synthetic_test_size
    if isinstance(transform, folder.WholeImage):
        side = crop = transform.size.short
    else:
        side, crop = round(transform.resolution / transform.crop_fraction), transform.resolution
    images, labels = synthetic.make_synthetic("train" if split != "eval" else "test", n,
                                              image_size=side, seed=config.seed)
    top = (side - crop) // 2
    return ArrayDataset(images[:, top:top + crop, top:top + crop], labels, int(labels.max()) + 1)


def _subset(n: int, limit: int, seed: int) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of `limit` of n examples (None: all of them)."""
    if not limit or limit >= n:
        return None
    return np.sort(np.random.default_rng([seed, 2]).choice(n, limit, replace=False))


def _limited(data: ArrayDataset, limit: int, seed: int) -> ArrayDataset:
    """`data`, or its fixed random subset of `limit` examples (_subset)."""
    chosen = _subset(len(data), limit, seed)
    return data if chosen is None else dataclasses.replace(
        data, images=data.images[chosen], labels=data.labels[chosen],
        sizes=None if data.sizes is None else data.sizes[chosen])


def load_split(config, split: str, transform, limit: int = 0) -> ArrayDataset:
    """A split decoded into memory through `transform` (folder.WholeImage: whole images for
    training, with their sizes; folder.CenterCrop: evaluation crops); `limit` > 0: a fixed random
    subset of that many examples (seeded by config.seed), the rest never decoded.
    split: 'train' (pretraining), 'bank' (labelled kNN / probe memory bank) or 'eval'."""
    info = datasets.info_for(config.dataset)
    if config.dataset == "synthetic":
        return _limited(_synthetic_split(config, split, transform), limit, config.seed)
    source = sources.open_source(config, split)
    where = getattr(source, "root", None) or getattr(source, "description", config.dataset)
    if len(source) == 0:
        raise DataError(f"the {split} split of {where} is empty; prepare it again or pick "
                        "another --config.dataset")
    num_classes = info.num_classes or source.num_classes
    if (chosen := _subset(len(source), limit, config.seed)) is not None:
        source = decode.Subset(source, chosen)
    images, sizes, labels, skipped = decode.load_arrays(
        source, transform, config.data.threads, progress=config.progress_bar, desc=where)
    if skipped:
        logging.warning("%d of %d images in %s could not be decoded and are skipped",
                        len(skipped), len(source), where)
    num_classes = num_classes or int(labels.max()) + 1
    whole = isinstance(transform, folder.WholeImage)
    return ArrayDataset(images, labels, max(num_classes, 1), skipped, sizes if whole else None)


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


def stream_split(config, split: str, resolution: int, process_index: int = 0,
                 process_count: int = 1, chunk: int = 64):
    """(iterator of (uint8 images, labels) chunks, number of examples, number of classes): this
    host's share of a split decoded `chunk` examples at a time (the evaluation transform at
    `resolution`), for evaluation at any dataset size: the split is never whole in memory (except
    `synthetic`, generated in memory). Undecodable examples are left out, as in load_split."""
    info = datasets.info_for(config.dataset)
    transform = eval_transform(config, resolution)
    if config.dataset == "synthetic":
        data = _synthetic_split(config, split, transform)
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
    chunks = ((im[ok], lb[ok]) for im, _, lb, ok in
              decode.decoded_chunks(part, transform, config.data.threads, chunk))
    num_classes = info.num_classes or source.num_classes
    return chunks, len(share), max(num_classes or 1, 1)


def num_train_examples(config) -> int:
    """The pretraining split's size, without decoding it (train.py's check for a finished run). An
    in-memory split can be smaller once decoded: the images it cannot decode are left out."""
    if config.dataset == "synthetic":
        return config.synthetic_train_size
    return len(sources.open_source(config, "train"))


def open_run_data(config, train_size: canvas.HostSize, eval_resolution: int):
    """(pretraining data, memory bank, eval split) of a run. The pretraining data is an
    ArrayDataset of whole images at `train_size` when in_memory(config), else a random-access
    source for the grain loader; the bank and eval splits (at most eval.online_subset images each)
    are decoded into memory through the evaluation transform for the online kNN."""
    limit = config.eval.online_subset
    evaluation = eval_transform(config, eval_resolution)
    if in_memory(config):
        train = load_split(config, "train", folder.WholeImage(train_size))
    else:
        train = _stream_source(config)
    bank = load_split(config, "bank", evaluation, limit)
    return train, bank, load_split(config, "eval", evaluation, limit)


class GlobalBatches:
    """A host loader (MemoryLoader, GrainLoader: this host's batch as numpy) that yields each
    step's batch as the global array on `mesh` that the train step takes, as the DeviceLoader
    does, so that the loop never asks which kind of loader it has."""

    def __init__(self, loader, mesh):
        self._loader = loader
        self._sharding = NamedSharding(mesh, P("data"))

    def canvas(self, step: int) -> int:
        return self._loader.canvas(step)

    def restore(self, start: int, saved: dict | None = None) -> None:
        self._loader.restore(start, saved)

    def state(self) -> dict:
        return self._loader.state()

    def __iter__(self):
        iter(self._loader)
        return self

    def __next__(self):
        step, images = next(self._loader)
        return step, jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(self._sharding, a), images)

    def close(self) -> None:
        self._loader.close()


def make_loader(config, train, plan, mesh, size_of, process_index: int = 0,
                process_count: int = 1):
    """The iterator of (step, canvas.Images as global arrays on `mesh`) over a run's plan: a
    DeviceLoader with data.loader=device, a MemoryLoader over an ArrayDataset, else a GrainLoader
    over a source at each bucket's host size, size_of(resolution) (these two through
    GlobalBatches)."""
    sampler = Sampler(len(train), config.batch_size, config.seed, process_index, process_count)
    if config.data.loader == "device":
        return device_loader.DeviceLoader(train.whole_images(), sampler, plan.total_steps, mesh,
                                          config.prefetch)
    if isinstance(train, ArrayDataset):
        return GlobalBatches(memory_loader.MemoryLoader(
            train.whole_images(), sampler, plan.total_steps, config.prefetch), mesh)
    sizes = grain_loader.host_sizes(plan, size_of)
    return GlobalBatches(grain_loader.GrainLoader(
        train, sampler, sizes, plan.total_steps, config.data.threads, config.data.processes,
        config.prefetch), mesh)
