"""Packs an image folder into the TFDS ArrayRecord layout, so that big folders read fast.

    python -m effssl_jax.data.prepare --src FOLDER --out DIR [--name NAME] [--max_size 0]

FOLDER is `FOLDER/{train,val}/<class>/*.jpg` (splits named after the subfolders: train, val,
validation, test), `FOLDER/<class>/*.jpg` (one split, train) or a flat `FOLDER/*.jpg` (unlabelled).
The result, `DIR/NAME/1.0.0/` (NAME-SPLIT.array_record-XXXXX-of-YYYYY shards, dataset_info.json,
features.json), is a regular TFDS dataset: `tfds.data_source`/`tfds.builder_from_directory` read it
without TensorFlow, and training reads it with `--config.dataset=folder:DIR`. Every file is decoded
once on the way in; undecodable ones are skipped, counted and logged with their path. Encoded bytes
are stored as they are (no re-encoding) unless --max_size shrinks images whose shorter side is
larger (re-encoded as JPEG, quality 90).
"""
from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from absl import flags

from effssl_jax import cli
from effssl_jax.data import datasets, folder
from effssl_jax.data.errors import DataError

log = logging.getLogger(__name__)
VERSION = "1.0.0"


def split_folders(src: str) -> dict[str, str]:
    """{split name: folder} of a source folder."""
    if not os.path.isdir(src):
        raise DataError(f"--src {src!r} does not exist; pass a folder of images")
    names = datasets.FOLDER_SPLITS["train"] + datasets.FOLDER_SPLITS["eval"]
    found = {n: os.path.join(src, n) for n in names if os.path.isdir(os.path.join(src, n))}
    return found or {"train": src}


def encoded(path: str, max_size: int) -> bytes | None:
    """The file's bytes if it decodes (shrunk and re-encoded when max_size is exceeded)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if folder.decode_image(data, 8) is None:
        return None
    if max_size:
        from PIL import Image
        with Image.open(io.BytesIO(data)) as im:
            if min(im.size) > max_size:
                im.draft("RGB", (max_size, max_size))
                im = folder._to_rgb(im).convert("RGB")
                scale = max_size / min(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.BICUBIC)
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=90)
                data = buf.getvalue()
    return data


def _shard_paths(version_dir: str, name: str, split: str, num_shards: int) -> list[str]:
    return [os.path.join(version_dir, f"{name}-{split}.array_record-{i:05d}-of-{num_shards:05d}")
            for i in range(num_shards)]


def write_split(version_dir: str, name: str, split: str, paths, labels, features,
                shard_size: int, threads: int, max_size: int, progress: bool):
    """Writes one split; returns (shard lengths, bytes written, skipped paths)."""
    from array_record.python.array_record_module import ArrayRecordWriter
    chunks = [range(i, min(i + 256, len(paths))) for i in range(0, len(paths), 256)]
    num_shards = max(1, -(-len(paths) // shard_size))
    shard_files = _shard_paths(version_dir, name, split, num_shards)
    lengths, total_bytes, skipped = [0] * num_shards, 0, []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(paths), desc=f"{name} {split}", unit="img")
    writer, shard, kept = None, -1, 0
    with ThreadPoolExecutor(threads) as pool:
        for chunk in chunks:
            for i, data in zip(chunk, pool.map(lambda i: encoded(paths[i], max_size), chunk)):
                if bar is not None:
                    bar.update(1)
                if data is None:
                    skipped.append(paths[i])
                    log.warning("skipped undecodable image %s", paths[i])
                    continue
                # Spread the kept examples evenly over the shards planned from the file count.
                target = min(kept * num_shards // max(len(paths), 1), num_shards - 1)
                if target != shard:
                    if writer is not None:
                        writer.close()
                    shard, writer = target, ArrayRecordWriter(shard_files[target], "group_size:1")
                example = {"image": data}
                if labels is not None:
                    example["label"] = int(labels[i])
                record = features.serialize_example(features.encode_example(example))
                writer.write(record)
                lengths[shard] += 1
                total_bytes += len(record)
                kept += 1
    if writer is not None:
        writer.close()
    if bar is not None:
        bar.close()
    for s in range(num_shards):  # a planned shard that got no example still has to exist
        if lengths[s] == 0 and not os.path.exists(shard_files[s]):
            ArrayRecordWriter(shard_files[s], "group_size:1").close()
    return lengths, total_bytes, skipped


def prepare(src: str, out: str, name: str | None = None, shard_size: int = 10000,
            threads: int = 0, max_size: int = 0, progress: bool = True) -> dict:
    """Converts `src`; returns {'dir': version dir, 'splits': {split: count}, 'skipped': [...]}."""
    import numpy as np
    import tensorflow_datasets as tfds
    name = name or os.path.basename(os.path.normpath(src)).lower()
    name = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "images"
    splits = split_folders(src)
    scanned = {split: folder.scan_folder(path) for split, path in splits.items()}
    class_names = next(iter(scanned.values()))[2]
    for split, (_, _, names) in scanned.items():
        if names and names != class_names:
            extra = sorted(set(names) - set(class_names))
            if extra:
                raise DataError(f"{splits[split]} has classes {extra[:3]} that the first split "
                                "lacks; give every split the same class folders")
    spec = {"image": tfds.features.Image(shape=(None, None, 3))}
    if class_names:
        spec["label"] = tfds.features.ClassLabel(names=class_names)
    features = tfds.features.FeaturesDict(spec)
    version_dir = os.path.join(out, name, VERSION)
    if os.path.exists(os.path.join(version_dir, "dataset_info.json")):
        raise DataError(f"{version_dir} already holds a prepared dataset; delete it or pass "
                        "another --out/--name")
    os.makedirs(version_dir, exist_ok=True)
    split_infos, counts, skipped = [], {}, []
    for split, (paths, labels, names) in scanned.items():
        if names:  # remap by name: a split may lack some classes
            labels = np.asarray([class_names.index(names[y]) for y in labels], np.int32)
        lengths, num_bytes, bad = write_split(
            version_dir, name, split, paths, labels if class_names else None, features,
            shard_size, threads or min(16, os.cpu_count() or 1), max_size, progress)
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths,
                                               num_bytes=num_bytes))
        counts[split] = sum(lengths)
        skipped += bad
        if not counts[split]:
            raise DataError(f"none of the {len(paths)} files in {splits[split]} could be "
                            "decoded; check that they are valid image files")
    tfds.folder_dataset.write_metadata(
        data_dir=version_dir, features=features, split_infos=split_infos,
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False,
        description=f"Packed from {os.path.abspath(src)} by effssl_jax.data.prepare.")
    return {"dir": version_dir, "splits": counts, "skipped": skipped}


_SRC = flags.DEFINE_string("src", None, "Image folder (see the module's docstring).")
_NAME = flags.DEFINE_string("name", None, "Dataset name (default: --src's basename).")
_SHARD_SIZE = flags.DEFINE_integer("shard_size", 10000, "Examples per shard.")
_THREADS = flags.DEFINE_integer("threads", 0, "Decode threads (0: CPUs).")
_MAX_SIZE = flags.DEFINE_integer("max_size", 0, "Shrink images whose shorter side exceeds this "
                                 "(0: keep the bytes).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _command(positional: list[str]) -> dict:
    """The command on the parsed flags (cli.py: --out, the data_dir)."""
    cli.flags_only(positional)
    if not _SRC.value or not cli.OUT.value:
        raise DataError("give --src FOLDER and --out DIR (python -m effssl_jax.data.prepare "
                        "--help)")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = prepare(_SRC.value, cli.OUT.value, _NAME.value, _SHARD_SIZE.value, _THREADS.value,
                     _MAX_SIZE.value, progress=_PROGRESS.value)
    counts = ", ".join(f"{s} {n}" for s, n in result["splits"].items())
    print(f"wrote {result['dir']}: {counts}; skipped {len(result['skipped'])} undecodable "
          f"file(s)\ntrain with --config.dataset=folder:{os.path.abspath(cli.OUT.value)}")
    return result


def main(argv: list[str]) -> dict:
    """The command from Python: main(["--src", FOLDER, "--out", DIR])."""
    return _command(cli.parse(["effssl-prepare", *argv]))


def console_main():
    cli.run_app(_command, __name__, (cli.OUT,))


if __name__ == "__main__":
    console_main()
