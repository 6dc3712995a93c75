"""The streaming input pipeline: folder -> ArrayRecord converter, TFDS sources, the grain loader
(per-host shards, buckets, exact resume), bad images in a real training run, one-line errors."""
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import COMPILE_FAST
from PIL import Image

from effssl_jax import config_schema
from effssl_jax.data import canvas, datasets, decode, folder, grain_loader, prepare, sources
from effssl_jax.data.errors import DataError
from effssl_jax.data.folder import decode_image
from effssl_jax.data.order import Sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(dataset, **kw):
    c = config_schema.default_config()
    c.dataset, c.progress_bar = dataset, False
    for k, v in kw.items():
        setattr(c, k, v)
    return c


class IndexSource:
    """Example i is a 12x9 PNG filled with value i: a decoded pixel names the example."""

    def __init__(self, n):
        self.blobs = []
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((9, 12, 3), i, np.uint8)).save(buf, format="PNG")
            self.blobs.append(buf.getvalue())
        self.num_classes, self.class_names = 0, []

    def __len__(self):
        return len(self.blobs)

    def read(self, indices):
        return [(self.blobs[i], int(i) % 3) for i in indices]

    def name(self, i):
        return f"index{i}"


def _ids(images):
    pixels = images.pixels if isinstance(images, canvas.Images) else images
    return pixels[:, 0, 0, 0].astype(int)


SIZE = canvas.HostSize(9, 16)  # IndexSource's images whole, in a 16 x 16 canvas


# ------------------------------------------------------------ converter and sources

def test_prepare_round_trip_preserves_images_and_labels(tmp_path, image_folder):
    src = image_folder(per_class=4, to=tmp_path / "nette")  # conftest: {train,val}/{disk,ring}
    (src / "train" / "disk" / "zero.jpg").write_bytes(b"")
    out = tmp_path / "packed"
    result = prepare.main(["--src", str(src), "--out", str(out), "--shard_size", "3",
                           "--noprogress"])
    assert result["dir"] == str(out / "nette" / "1.0.0") and len(result["skipped"]) == 1
    version_dir = out / "nette" / "1.0.0"
    assert (version_dir / "dataset_info.json").exists()
    assert len(glob.glob(str(version_dir / "nette-train.array_record-*-of-00003"))) == 3

    for role, folder_split in (("train", "train"), ("eval", "val")):
        packed = sources.open_source(_config(f"folder:{out}"), role)
        plain = sources.open_source(_config(f"folder:{src}"), role)
        assert isinstance(packed, sources.TfdsSource) and isinstance(plain, sources.FolderSource)
        good = [i for i, p in enumerate(plain.paths) if not p.endswith("zero.jpg")]
        assert len(packed) == len(good) == 8
        assert packed.class_names == plain.class_names == ["disk", "ring"]
        images, _, labels, ok = decode.decode_examples(packed, range(len(packed)),
                                                       folder.CenterCrop(40, 1.0))
        assert ok.all()
        np.testing.assert_array_equal(labels, plain.labels[good])
        for img, i in zip(images, good):
            np.testing.assert_array_equal(img, decode_image(plain.paths[i], 40))
    # A regular TFDS dataset: tfds reads it back (decoding it itself) without TensorFlow.
    import tensorflow_datasets as tfds
    ds = tfds.data_source("nette", split="val", data_dir=str(out), download=False)
    assert len(ds) == 8 and ds[0]["image"].shape == (160, 160, 3)
    assert "tensorflow" not in sys.modules


def test_prepare_unlabelled_flat_folder_and_shrinking(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    big.save(src / "a.png")
    big.convert("L").save(src / "b.jpg")
    result = prepare.prepare(str(src), str(tmp_path / "out"), max_size=100, progress=False)
    assert result["splits"] == {"train": 2} and result["skipped"] == []
    source = sources.TfdsSource(sources._builder_from_directory(result["dir"]), "train")
    records = source.read([0, 1])
    assert [label for _, label in records] == [-1, -1] and source.num_classes == 0
    assert Image.open(io.BytesIO(records[0][0])).size == (133, 100)  # shorter side 300 -> 100


def test_tfds_name_not_prepared_names_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"not prepared in .*run `tfds build cifar10 "
                                        r"--data_dir=.* --file_format=array_record`.*data_dir"):
        sources.open_source(_config("cifar10", data_dir=str(tmp_path)), "train")
    with pytest.raises(DataError, match="cannot be opened.*tfds build"):
        sources.open_source(_config("tfds:no_such_dataset", data_dir=str(tmp_path)), "train")
    with pytest.raises(DataError, match="unknown; valid: synthetic, imagenette, imagenet2012"):
        datasets.parse("imagenet")
    with pytest.raises(DataError, match="does not exist"):
        sources.open_source(_config(f"folder:{tmp_path}/nope"), "train")
    (tmp_path / "empty" / "train" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="contains no images"):
        sources.open_source(_config(f"folder:{tmp_path}/empty"), "train")


def test_dataset_table_and_imagenette_folder(image_folder):
    assert datasets.info_for("stl10").train_split == "train+unlabelled"
    assert datasets.info_for("stl10").bank_split == "train"
    assert datasets.info_for("imagenet2012").num_classes == 1000
    assert datasets.info_for("tfds:cifar10") == datasets.DATASETS["cifar10"]
    assert datasets.info_for("tfds:imagenette/160px-v2").tfds_name == "imagenette/160px-v2"
    src = image_folder(per_class=1)
    # --config.dataset=imagenette with a data_dir holding train/ and val/ reads the folders.
    source = sources.open_source(_config("imagenette", data_dir=str(src)), "eval")
    assert isinstance(source, sources.FolderSource) and source.root.endswith("val")


def test_host_sizes_follow_the_buckets():
    # The shorter side r * sqrt((4/3) / 0.2), the canvas 4/3 of it rounded up to 8.
    assert [canvas.host_size(r, 0.2, 4 / 3, 4 / 3) for r in (96, 224)] == \
        [canvas.HostSize(248, 336), canvas.HostSize(579, 776)]
    assert canvas.host_size(224, 0.08, 4 / 3, 1.0) == canvas.HostSize(915, 920)
    assert canvas.host_size(224, 0.2, 4 / 3, 4 / 3, fixed=160) == canvas.HostSize(160, 216)

    class Plan:
        stages = [type("Stage", (), dict(start=s, resolution=r))() for s, r in
                  ((0, 224), (10, 96), (20, 128))]
    sizes = grain_loader.host_sizes(Plan, lambda r: r + 1)
    assert sizes == ((0, 225), (10, 97), (20, 129))
    assert [grain_loader.size_at(sizes, s) for s in (0, 9, 10, 19, 20, 99)] == \
        [225, 225, 97, 97, 129, 129]


# ---------------------------------------------------------------------- loader

@pytest.mark.parametrize("processes", [2, 4])
def test_host_shards_are_disjoint_and_cover_each_epoch(processes):
    n, batch = 48, 16
    source = IndexSource(n)
    for epoch in range(2):
        seen = []
        for p in range(processes):
            sampler = Sampler(n, batch, seed=3, process_index=p, process_count=processes)
            ld = grain_loader.GrainLoader(source, sampler, ((0, SIZE),), 6, threads=2)
            ld.restore(3 * epoch)
            host = [(step, _ids(images)) for _, (step, images) in zip(range(3), ld)]
            ld.close()
            assert [step for step, _ in host] == [3 * epoch + k for k in range(3)]
            for step, ids in host:  # what the grain loader decoded is what the sampler chose
                assert len(ids) == batch // processes
                np.testing.assert_array_equal(ids, sampler.indices(step))
            seen += [i for _, ids in host for i in ids]
        assert sorted(seen) == list(range(n))  # disjoint (no repeats) and covering


def test_host_shards_drop_only_the_incomplete_batch():
    n, batch = 50, 16  # 3 full batches; 2 examples left out of each epoch
    seen = [i for p in range(4) for s in range(3)
            for i in Sampler(n, batch, 0, p, 4).indices(s)]
    assert len(seen) == len(set(seen)) == 48


def test_resumed_iterator_yields_the_same_batches(tmp_path):
    source = IndexSource(40)
    sampler = Sampler(40, 8, seed=1)
    sizes = ((0, canvas.HostSize(9, 16)), (4, canvas.HostSize(6, 8)), (7, canvas.HostSize(9, 16)))
    make = lambda: grain_loader.GrainLoader(source, sampler, sizes, 10, threads=3, prefetch=4)
    full = make()
    reference = [(step, images) for step, images in full]
    assert [s for s, _ in reference] == list(range(10))
    assert [im.canvas for _, im in reference] == [16] * 4 + [8] * 3 + [16] * 3
    # The whole 9 x 12 images, then shrunk to fit 6 x 8: aspect ratio kept.
    assert [tuple(im.sizes[0]) for _, im in reference] == [(9, 12)] * 4 + [(6, 8)] * 3 + [
        (9, 12)] * 3
    first = make()
    head = [next(iter(first)) for _ in range(5)]
    saved = json.loads(json.dumps(first.state()))  # as stored in the checkpoint's metadata
    first.close()
    assert saved["next_step"] == 5 and saved["grain"] is not None
    for state in (saved, None):  # with grain's saved state, and from the step alone
        resumed = make()
        resumed.restore(5, state)
        tail = list(resumed)
        assert [s for s, _ in head + tail] == list(range(10))
        for (s, a), (_, b) in zip(head + tail, reference):
            np.testing.assert_array_equal(a.pixels, b.pixels, err_msg=f"step {s}")
            np.testing.assert_array_equal(a.sizes, b.sizes, err_msg=f"step {s}")
    bad = dict(saved, order=dict(saved["order"], num_examples=41))
    with pytest.raises(DataError, match="data order .* differs"):
        make().restore(5, bad)
    with pytest.raises(DataError, match="inconsistent"):
        make().restore(6, saved)


@pytest.mark.parametrize("devices", [1, 8])
def test_device_loader_gives_the_memory_loaders_batches_and_resumes(devices):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax.data.device_loader import DeviceLoader
    from effssl_jax.data.memory_loader import MemoryLoader
    from effssl_jax.step import data_mesh
    mesh = data_mesh(jax.devices()[:devices])
    rng = np.random.default_rng(0)
    images = canvas.Images(rng.integers(0, 256, (45, 4, 4, 3), dtype=np.uint8),
                           rng.integers(1, 5, (45, 2), dtype=np.int32))
    sampler = Sampler(45, 16, seed=2)  # 2 steps an epoch, 13 images left out; 45 rows on 8 devices
    put = lambda a: jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), a)
    memory = [(s, jax.tree.map(put, b)) for s, b in MemoryLoader(images, sampler, 7)]
    loader = DeviceLoader(images, sampler, 7, mesh)
    on_device = list(loader)
    assert [s for s, _ in on_device] == [s for s, _ in memory] == list(range(7))
    for (s, a), (_, b) in zip(on_device, memory):
        assert a.pixels.sharding.is_equivalent_to(b.pixels.sharding, 4)
        assert a.pixels.dtype == np.uint8 and a.sizes.dtype == np.int32
        for x, y in ((a.pixels, b.pixels), (a.sizes, b.sizes)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"step {s}")
    assert loader.state() == {"next_step": 7, "order": sampler.fingerprint()}
    resumed = DeviceLoader(images, sampler, 7, mesh)
    resumed.restore(4, {"next_step": 4, "order": sampler.fingerprint()})
    tail = list(resumed)
    assert [s for s, _ in tail] == [4, 5, 6]
    for (_, a), (_, b) in zip(tail, memory[4:]):
        np.testing.assert_array_equal(np.asarray(a.pixels), np.asarray(b.pixels))
        np.testing.assert_array_equal(np.asarray(a.sizes), np.asarray(b.sizes))


def test_device_loader_refuses_a_split_larger_than_half_a_device(monkeypatch):
    import jax

    from effssl_jax.data import device_loader
    from effssl_jax.step import data_mesh
    monkeypatch.setattr(device_loader, "_bytes_limit", lambda device: 2 * 45 * 48 - 1)
    images = canvas.Images.full(np.zeros((45, 4, 4, 3), np.uint8))  # 45 x 48 bytes on a device
    with pytest.raises(DataError, match="needs .* GiB per device.*--config.data.loader=memory"):
        device_loader.DeviceLoader(images, Sampler(45, 16, 0), 3, data_mesh(jax.devices()[:1]))


def test_bad_examples_are_replaced_counted_and_logged_once(caplog):
    source = IndexSource(20)
    source.blobs[4] = b""
    source.blobs[5] = source.blobs[5][:40]  # truncated PNG
    sampler = Sampler(20, 20, seed=0)
    hb = grain_loader.HostBatch(source, sampler, ((0, SIZE),))
    with caplog.at_level("WARNING"):
        _, images, _ = hb(0)
        _, again, _ = hb(1)
    ids = dict(zip(sampler.indices(0), _ids(images)))
    assert ids[4] == 6 and ids[5] == 6  # the next decodable example stands in
    assert {"index4", "index5"} <= set(decode.SKIPPED)
    assert sum("index4" in r.message for r in caplog.records) == 1  # logged once
    assert sorted(_ids(again)) == sorted([i for i in range(20) if i not in (4, 5)] + [6, 6])


def test_load_arrays_leaves_bad_examples_out():
    source = IndexSource(10)
    source.blobs[2] = b"not an image"
    images, sizes, labels, skipped = decode.load_arrays(source, folder.WholeImage(SIZE),
                                                        threads=2, chunk=3)
    assert skipped == ["index2"] and images.shape == (9, 16, 16, 3)
    assert (sizes == [9, 12]).all()
    assert _ids(images).tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert labels.tolist() == [0, 1, 0, 1, 2, 0, 1, 2, 0]


# -------------------------------------------------------- a real run on bad data

def _save(img, path, **kw):
    with open(path, "wb") as f:
        img.save(f, **kw)


def test_training_on_a_folder_with_bad_images(tmp_path, image_folder):
    """Truncated JPEG, CMYK JPEG, grayscale PNG and a zero-byte file among 12 JPEGs of several
    sizes and modes: the run finishes, the two bad files are counted and logged with their path."""
    src = image_folder(per_class=6, to=tmp_path / "data")
    cls = src / "train" / "disk"
    real = sorted(cls.iterdir())[0]
    rgb = Image.open(real).convert("RGB")
    _save(rgb.convert("CMYK"), cls / "cmyk.jpg", format="JPEG")
    _save(rgb.convert("L"), cls / "gray.png", format="PNG")
    data = real.read_bytes()
    (cls / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (cls / "zero.jpg").write_bytes(b"")
    workdir = tmp_path / "run"
    cmd = [sys.executable, "launch.py", "--config", "configs/quickstart.py",
           f"--config.dataset=folder:{src}", "--config.method=simsiam", "--config.model.width=8",
           "--config.batch_size=8", "--config.epochs=1", "--config.progressive.r_max=16",
           "--config.simsiam.proj_dim=32", "--config.simsiam.pred_hidden=16",
           "--config.progress_bar=False", "--config.data.threads=2", "--config.log_every_steps=1",
           "--config.eval.at_init=False", f"--workdir={workdir}"]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "XLA_FLAGS": COMPILE_FAST},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 2  # 16 files, 8 per batch: the bad ones still count as slots
    assert summary["skipped_images"] == 2
    assert summary["compiled_steps"] == 1
    for name in ("truncated.jpg", "zero.jpg"):
        assert r.stderr.count(f"skipped undecodable image {cls / name}") == 1, r.stderr[-3000:]
    assert "cmyk.jpg" not in r.stderr and "gray.png" not in r.stderr
    losses = [json.loads(line)["loss"] for line in open(workdir / "metrics.jsonl")
              if '"loss"' in line]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_training_resumes_the_grain_stream_exactly(tmp_path, image_folder):
    """A run stopped after its step-1 checkpoint and rerun logs the losses of the uninterrupted
    run: the grain iterator state in the checkpoint puts the stream back at step 1."""
    from effssl_jax import train
    from tests.tiny import tiny_config

    src = image_folder(per_class=4)  # 8 train images: one step per epoch
    c = tiny_config()
    c.dataset, c.progress_bar, c.batch_size, c.epochs = f"folder:{src}", False, 8, 3
    c.data.threads, c.log_every_steps, c.checkpoint_every_steps = 2, 1, 1
    c.eval.every_epochs, c.eval.at_init = 0, False

    def losses(workdir):
        rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    train.run(c, str(tmp_path / "full"))
    reference = losses(tmp_path / "full")
    assert sorted(reference) == [1, 2, 3]
    train.run(c, str(tmp_path / "cut"), stop=lambda record: record["step"] == 2)
    meta = json.loads((tmp_path / "cut" / "checkpoints" / "1" / "meta" / "metadata").read_text())
    assert not (tmp_path / "cut" / "checkpoints" / "2").exists()
    assert meta["data_iterator"]["next_step"] == 1 and meta["data_iterator"]["grain"]
    assert train.run(c, str(tmp_path / "cut"))["steps"] == 3
    assert losses(tmp_path / "cut") == reference
