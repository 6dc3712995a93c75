"""Random-access sources of encoded images: image folders and TFDS ArrayRecord datasets.

A source has `len()`, `read(indices) -> [(path or encoded bytes, label)]`, `name(i)` (what a log
line calls example i), `num_classes` and `class_names`. Nothing is decoded here: decoding and
resizing happen in the loader's workers (data/decode.py), so the same source serves every
resolution bucket. TFDS datasets are read with `tfds.data_source` (ArrayRecord; no TensorFlow at
runtime) with the image feature left encoded (`SkipDecoding`), so PIL decodes it with libjpeg's
draft mode (data/folder.py) instead of TFDS decoding it at full size first.
"""
from __future__ import annotations

import os

from effssl_jax import storage
from effssl_jax.data import datasets, folder
from effssl_jax.data.errors import DataError


class FolderSource:
    """`root/<class>/*.{jpg,jpeg,png,webp,bmp}` (labels by sorted class name) or a flat, unlabelled
    `root/*.jpg` (labels -1)."""

    def __init__(self, root: str):
        self.root = root
        self.paths, self.labels, self.class_names = folder.scan_folder(root)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices) -> list[tuple[str, int]]:
        return [(self.paths[i], int(self.labels[i])) for i in indices]

    def name(self, i: int) -> str:
        return self.paths[i]


class TfdsSource:
    """One split of a prepared TFDS dataset in the ArrayRecord format."""

    def __init__(self, builder, split: str):
        import tensorflow_datasets as tfds
        self.description = f"{builder.name}[{split}] in {builder.data_dir}"
        self._source = builder.as_data_source(split=split,
                                              decoders={"image": tfds.decode.SkipDecoding()})
        features = builder.info.features
        label = features["label"] if "label" in features.keys() else None
        self.class_names = list(getattr(label, "names", None) or [])
        self.num_classes = int(getattr(label, "num_classes", 0) or 0)

    def __len__(self) -> int:
        return len(self._source)

    def read(self, indices) -> list[tuple[bytes, int]]:
        records = self._source.__getitems__(list(indices))
        return [(r["image"], int(r.get("label", -1))) for r in records]

    def name(self, i: int) -> str:
        return f"{self.description} record {i}"


def _tfds_builder(name: str, data_dir: str):
    where = data_dir or "~/tensorflow_datasets"
    build = (f"run `tfds build {name} --data_dir={where} --file_format=array_record` where the "
             f"data can be downloaded and copy {where}/{name.split('/')[0]} here, or point "
             "--config.data_dir at the folder that holds it; or train on an image folder "
             "(--config.dataset=folder:PATH) or on --config.dataset=synthetic")
    local = "://" not in where  # gs:// and other remote data directories are TFDS's to check
    if local and not os.path.isdir(os.path.expanduser(where)):  # TFDS would warn, then fail
        raise DataError(f"TFDS dataset {name!r}: the data directory {where} does not exist; "
                        f"{build}")
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001 - DatasetNotFoundError, bad config names, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"TFDS dataset {name!r} cannot be opened ({first}); {build}") from None
    if not builder.is_prepared():
        raise DataError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; {build}")
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    if fmt != "array_record":
        raise DataError(f"TFDS dataset {name!r} in {builder.data_dir} is stored as {fmt}, which "
                        f"has no random access; rebuild it with `tfds build {name} "
                        f"--data_dir={where} --file_format=array_record`")
    return builder


def _builder_from_directory(path: str):
    import tensorflow_datasets as tfds
    return tfds.builder_from_directory(path)


def find_prepared(root: str) -> str | None:
    """The version directory (holding dataset_info.json) under `root` written by
    `python -m effssl_jax.data.prepare`, or None for a plain image folder."""
    for pattern in ("dataset_info.json", "*/dataset_info.json", "*/*/dataset_info.json"):
        found = storage.glob(root, pattern)
        if len(found) > 1:
            raise DataError(f"{root!r} holds several prepared datasets ({', '.join(found)}); "
                            "point --config.dataset=folder:PATH at one of their folders")
        if found:
            return storage.dirname(found[0])
    return None


def _split_name(available, role: str, info: datasets.DatasetInfo, where: str) -> str:
    wanted = {"train": info.train_split, "bank": info.bank_split, "eval": info.eval_split}[role]
    if wanted:
        missing = [s for s in wanted.split("+") if s not in available]
        if not missing:
            return wanted
        raise DataError(f"{where} has no split {missing[0]!r} (it has {', '.join(available)}); "
                        "prepare that split or pick another dataset")
    for name in datasets.EVAL_SPLIT_NAMES:
        if name in available:
            return name
    raise DataError(f"{where} has no held-out split (one of "
                    f"{', '.join(datasets.EVAL_SPLIT_NAMES)}); it has {', '.join(available)}; "
                    "prepare it with one (e.g. a val/ folder)")


def _folder_split(root: str, role: str) -> str:
    names = datasets.FOLDER_SPLITS["train" if role in ("train", "bank") else "eval"]
    for name in names:
        if storage.isdir(storage.join(root, name)):
            return storage.join(root, name)
    raise DataError(f"{root!r} has no {'/'.join(names)} folder for the {role} split; expected "
                    f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg")


def _open_folder(root: str, role: str, info: datasets.DatasetInfo):
    """A plain image folder, or a folder packed by `python -m effssl_jax.data.prepare`."""
    if not storage.isdir(root):
        raise DataError(f"data folder {root!r} does not exist; pass --config.dataset="
                        "folder:PATH (or --config.data_dir) or --config.dataset=synthetic")
    prepared = find_prepared(root)
    if prepared is None:
        return FolderSource(_folder_split(root, role))
    builder = _builder_from_directory(prepared)
    return TfdsSource(builder, _split_name(list(builder.info.splits), role, info, prepared))


def open_source(config, role: str):
    """The source of a split role ('train': pretraining, 'bank': labelled memory bank, 'eval':
    held out) of `config.dataset` (not 'synthetic', which is generated in memory)."""
    kind, arg = datasets.parse(config.dataset)
    info = datasets.info_for(config.dataset)
    if kind == "folder" or (kind == "imagenette" and config.data_dir
                            and storage.isdir(storage.join(config.data_dir, "train"))):
        return _open_folder(arg or config.data_dir, role, info)
    if info.tfds_name is None:
        raise DataError(f"dataset {config.dataset!r} has no files to read; use folder:PATH")
    builder = _tfds_builder(info.tfds_name, config.data_dir)
    split = _split_name(list(builder.info.splits), role, info,
                        f"TFDS dataset {info.tfds_name!r} in {builder.data_dir}")
    return TfdsSource(builder, split)
