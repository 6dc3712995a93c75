"""The dataset table: what `--config.dataset=NAME` means, in one place.

Each named dataset has its TFDS name, its split names (pretraining, the labelled split used as the
kNN / linear-probe memory bank, held-out evaluation) and its class count. `folder:PATH` and
`tfds:NAME[/CONFIG]` select any image folder or any prepared TFDS dataset; a TFDS name borrows the
splits and class count of the table entry with the same base name, else gets a generic row. Inputs
of every dataset are normalised with ImageNet's per-channel statistics (effssl_jax/augment.py), so
the table holds none.
"""
from __future__ import annotations

import dataclasses

from effssl_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    tfds_name: str | None  # None: not a TFDS dataset (synthetic, folders)
    train_split: str  # pretraining split (may be unlabelled, e.g. STL-10's train+unlabelled)
    bank_split: str  # labelled split: kNN memory bank / linear-probe training set
    eval_split: str  # held-out labelled split
    num_classes: int  # 0: read from the data


DATASETS: dict[str, DatasetInfo] = {
    "synthetic": DatasetInfo(None, "train", "train", "test", 10),
    # TFDS imagenette's default config is full-size-v2; use tfds:imagenette/160px-v2 for others.
    "imagenette": DatasetInfo("imagenette", "train", "train", "validation", 10),
    "imagenet2012": DatasetInfo("imagenet2012", "train", "train", "validation", 1000),
    "stl10": DatasetInfo("stl10", "train+unlabelled", "train", "test", 10),
    "cifar10": DatasetInfo("cifar10", "train", "train", "test", 10),
}
# Image folders: split subfolder names tried in order.
FOLDER_SPLITS = {"train": ("train",), "eval": ("val", "validation", "test")}
EVAL_SPLIT_NAMES = ("validation", "val", "test")


def parse(dataset: str) -> tuple[str, str]:
    """'folder:PATH' -> ('folder', PATH); 'tfds:NAME' -> ('tfds', NAME);
    a table name -> (name, '')."""
    kind, _, arg = dataset.partition(":")
    if kind in ("folder", "tfds"):
        if not arg:
            raise DataError(f"dataset={dataset!r} needs a value after the colon, e.g. "
                            "--config.dataset=folder:/data/my_images or tfds:imagenette/160px-v2")
        return kind, arg
    if dataset not in DATASETS:
        raise DataError(f"dataset={dataset!r} is unknown; valid: {', '.join(DATASETS)}, "
                        "folder:PATH, tfds:NAME")
    return dataset, ""


def info_for(dataset: str) -> DatasetInfo:
    """The table row of a dataset name. `tfds:NAME[/CONFIG]` whose base name is in the table gets
    that row with its TFDS name; folders and other TFDS names get a generic row (train split for
    pretraining and bank, eval split found in the data, classes read from the data)."""
    kind, arg = parse(dataset)
    if kind in DATASETS:
        return DATASETS[kind]
    base = DATASETS.get(arg.split("/")[0]) if kind == "tfds" else None
    if base is not None:
        return dataclasses.replace(base, tfds_name=arg)
    return DatasetInfo(arg if kind == "tfds" else None, "train", "train", "", 0)
