"""Host-side data sources: the generated synthetic set and the image-folder loader."""
import io
import shutil

import images
import numpy as np
import pytest
from PIL import Image, ImageFile

from effssl_jax.data.errors import DataError
from effssl_jax.data.folder import decode_image, load_folder_arrays, scan_folder
from effssl_jax.data.synthetic import CLASS_NAMES, make_synthetic

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# ---------------------------------------------------------------- synthetic

def test_synthetic_shapes_determinism_and_splits():
    x, y = make_synthetic("train", 300, image_size=24)
    assert x.shape == (300, 24, 24, 3) and x.dtype == np.uint8
    assert y.shape == (300,) and y.dtype == np.int32
    x2, y2 = make_synthetic("train", 300, image_size=24)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # Other seed / other split: different images, none shared.
    for other, _ in (make_synthetic("train", 300, image_size=24, seed=1),
                     make_synthetic("test", 300, image_size=24)):
        flat, oflat = x.reshape(300, -1), other.reshape(300, -1)
        assert not np.array_equal(x, other)
        assert not (flat[:, None, :] == oflat[None, :, :]).all(-1).any()
    # Images are not near-constant: there is an object on a textured background.
    assert x.reshape(300, -1).std(1).min() > 5


def test_synthetic_labels_balanced():
    _, y = make_synthetic("train", 1003)
    counts = np.bincount(y, minlength=len(CLASS_NAMES))
    assert len(counts) == 10 and counts.min() == 100 and counts.max() == 101
    _, y5 = make_synthetic("test", 50, num_classes=5)
    np.testing.assert_array_equal(np.bincount(y5), [10] * 5)
    with pytest.raises(ValueError):
        make_synthetic("val", 10)
    with pytest.raises(ValueError):
        make_synthetic("train", 10, num_classes=11)


def _knn1(train_feats, train_labels, test_feats, test_labels):
    a = train_feats / (np.linalg.norm(train_feats, axis=1, keepdims=True) + 1e-8)
    b = test_feats / (np.linalg.norm(test_feats, axis=1, keepdims=True) + 1e-8)
    return float((train_labels[(b @ a.T).argmax(1)] == test_labels).mean())


def _raw_pixels(x):
    f = x.reshape(len(x), -1).astype(np.float32)
    return f - f.mean(1, keepdims=True)


def _edge_map(x):
    """Colour-invariant shape feature: gradient magnitude of the grayscale image."""
    g = x.astype(np.float32) @ LUMA
    m = np.hypot(g[:, 1:-1, 2:] - g[:, 1:-1, :-2], g[:, 2:, 1:-1] - g[:, :-2, 1:-1])
    f = m.reshape(len(m), -1)
    return f - f.mean(1, keepdims=True)


def _colour_histogram(x):
    q = x.astype(np.int64) // 64
    code = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(x), -1)
    return np.stack([np.bincount(c, minlength=64) for c in code]).astype(np.float32)


def test_synthetic_is_about_shape_not_colour():
    # Measured (seeds 0-3, 2000 train / 500 test, 1-NN, chance = 0.10):
    #   raw pixels 0.23-0.30, colour histogram 0.11-0.13, edge map 0.74-0.77.
    xtr, ytr = make_synthetic("train", 2000)
    xte, yte = make_synthetic("test", 500)
    raw = _knn1(_raw_pixels(xtr), ytr, _raw_pixels(xte), yte)
    colour = _knn1(_colour_histogram(xtr), ytr, _colour_histogram(xte), yte)
    edges = _knn1(_edge_map(xtr), ytr, _edge_map(xte), yte)
    assert 0.12 < raw < 0.45, raw       # not trivial from pixels...
    assert colour < 0.18, colour         # ...nor from colour...
    assert edges > 0.6, edges            # ...but shape information is there.


# ------------------------------------------------------------------- folder

def _save(img, path, **kw):
    with open(path, "wb") as f:
        img.save(f, **kw)


def _size_mode(path):
    with Image.open(path) as im:
        return im.size, im.mode


@pytest.fixture(scope="module")
def jpegs(image_folder):
    """The first 3 train JPEGs of two classes of the generated folder: a 160 x 160 RGB, a 4:3 RGB
    and a 3:4 greyscale one; a 3:4 RGB, a 16:9 CMYK and a 20 x 28 RGB one."""
    root = image_folder() / "train"
    a = [str(p) for p in sorted((root / "disk").glob("*.JPEG"))[:3]]
    b = [str(p) for p in sorted((root / "ring").glob("*.JPEG"))[:3]]
    assert [_size_mode(p)[1] for p in a + b] == ["RGB", "RGB", "L", "RGB", "CMYK", "RGB"]
    return a, b


def test_generated_image_folder(image_folder, tmp_path):
    """conftest's image_folder: labelled, of every size and mode promised, deterministic, and
    learnable (1-NN on 32 px pixels far above chance); write_jpeg writes the size and mode asked."""
    root = image_folder(per_class=8, classes=4)
    files = {}
    for split in ("train", "val"):
        paths, labels, names = scan_folder(str(root / split))
        assert names == list(CLASS_NAMES[:4]) and np.bincount(labels).tolist() == [8] * 4
        files[split] = [_size_mode(p) for p in paths]
        assert files[split][0] == ((160, 160), "RGB")
    train = files["train"]
    assert {size[::-1] for size, _ in train} == set(images.SIZES)
    assert min(min(size) for size, _ in train) < 32
    modes = [mode for _, mode in train]
    assert set(modes) == {"RGB", "L", "CMYK"} and modes.count("L") >= 4 and modes.count("CMYK") >= 4
    again = images.write_image_folder(tmp_path / "again", per_class=8, classes=4)
    for p in sorted(root.glob("*/*/*.JPEG")):
        assert (again / p.relative_to(root)).read_bytes() == p.read_bytes(), p
    # Measured: 1-NN 0.91 on raw pixels, 0.59 on the colour-free edge map; chance is 0.25.
    xtr, ytr, _, skipped = load_folder_arrays(str(root / "train"), 32, progress=False)
    xte, yte, _, _ = load_folder_arrays(str(root / "val"), 32, progress=False)
    assert skipped == [] and len(xtr) == len(xte) == 32
    assert _knn1(_raw_pixels(xtr), ytr, _raw_pixels(xte), yte) > 0.7
    assert _knn1(_edge_map(xtr), ytr, _edge_map(xte), yte) > 0.4
    for height, width, mode in ((90, 160, "RGB"), (160, 120, "L"), (24, 31, "CMYK")):
        path = images.write_jpeg(tmp_path / "one" / f"{mode}.jpg", height, width, mode, seed=3)
        with Image.open(path) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (width, height), mode)


@pytest.fixture
def image_tree(tmp_path, jpegs):
    """root/{cats,dogs}/: 6 JPEGs of several sizes and modes, 5 odd-mode images (one a GIF), 3
    broken files."""
    a, b = jpegs
    root = tmp_path / "root"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    for i, p in enumerate(a):
        shutil.copyfile(p, root / "cats" / f"img{i}.JPEG")  # upper-case extension
    for i, p in enumerate(b):
        shutil.copyfile(p, root / "dogs" / f"img{i}.jpg")
    rgb = Image.open(a[0]).convert("RGB").resize((48, 40))
    _save(rgb.convert("L"), root / "cats" / "gray.png", format="PNG")
    _save(rgb.convert("CMYK"), root / "cats" / "cmyk.jpg", format="JPEG")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    _save(pal, root / "dogs" / "palette.png", format="PNG", transparency=0)
    _save(pal, root / "dogs" / "palette.gif", format="GIF")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    _save(rgba, root / "dogs" / "rgba.png", format="PNG")
    data = open(b[0], "rb").read()
    (root / "dogs" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "cats" / "empty.jpg").write_bytes(b"")
    (root / "cats" / "notes.jpg").write_text("this is not an image\n")
    (root / "cats" / "readme.txt").write_text("ignored: not an image extension\n")
    bad = {str(root / "dogs" / "truncated.jpg"), str(root / "cats" / "empty.jpg"),
           str(root / "cats" / "notes.jpg")}
    return root, bad


def test_truncated_images_are_not_loaded_leniently():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_scan_folder_layout(image_tree):
    root, _ = image_tree
    paths, labels, names = scan_folder(str(root))
    assert names == ["cats", "dogs"]
    assert len(paths) == 14 and paths == sorted(paths)
    assert not any(p.endswith(".txt") for p in paths)
    assert str(root / "dogs" / "palette.gif") in paths
    assert labels.dtype == np.int32
    assert labels.tolist() == [0] * 7 + [1] * 7
    assert scan_folder(str(root))[0] == paths  # deterministic


def test_load_folder_arrays_skips_exactly_the_bad_files(image_tree):
    root, bad = image_tree
    images, labels, names, skipped = load_folder_arrays(str(root), 32, num_workers=2,
                                                        progress=False)
    assert set(skipped) == bad and len(skipped) == 3
    assert images.shape == (11, 32, 32, 3) and images.dtype == np.uint8
    assert names == ["cats", "dogs"]
    assert labels.tolist() == [0] * 5 + [1] * 6  # cats: 3 JPEGs + gray + cmyk
    good = [p for p in scan_folder(str(root))[0] if p not in bad]
    for img, path in zip(images, good):
        np.testing.assert_array_equal(img, decode_image(path, 32))
    # Grayscale became 3 equal channels; the half-transparent RGBA was composited
    # on black, so it is darker than its opaque source.
    gray = images[good.index(str(root / "cats" / "gray.png"))].astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    rgba = images[good.index(str(root / "dogs" / "rgba.png"))].astype(float)
    src = decode_image(good[0], 32).astype(float)
    assert abs(rgba.mean() / src.mean() - 128 / 255) < 0.05


def test_decode_matches_pil_resize(jpegs):
    path = jpegs[0][0]  # square: torchvision's Resize(64) + CenterCrop(64) is a PIL resize
    ref = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    out = decode_image(path, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)
    # Bytes input gives the same result as a path.
    np.testing.assert_array_equal(decode_image(open(path, "rb").read(), 64), out)


def test_decode_resizes_short_side_and_centre_crops():
    # 200x100 image: left/middle/right thirds red/green/blue-ish. The centre
    # crop keeps the middle 100x100, i.e. mostly green with red and blue edges.
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, :100, 0] = a[:, 100:200, 1] = a[:, 200:, 2] = 255
    img = Image.fromarray(a).resize((200, 100), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode_image(buf.getvalue(), 20)
    assert out.shape == (20, 20, 3)
    assert out[:, 10, 1].min() > 250 and out[:, 10, [0, 2]].max() < 5
    assert out[:, 0, 0].min() > 200 and out[:, -1, 2].min() > 200


def test_whole_large_jpeg_uses_draft_and_stays_accurate(jpegs):
    from effssl_jax.data import canvas, folder
    big = Image.open(jpegs[0][0]).convert("RGB").resize((1280, 960))
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=95)
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    decoded.draft(None, (170, 128))
    assert decoded.size == (320, 240)  # libjpeg decodes it at 1/4 (>= twice the kept size)
    pixels, (h, w) = folder.WholeImage(canvas.HostSize(64, 88))(buf.getvalue())
    assert (h, w) == (64, 85)  # the whole image, aspect ratio kept
    ref = np.asarray(big.resize((85, 64), Image.Resampling.BICUBIC))
    assert np.abs(pixels[:h, :w].astype(int) - ref).mean() < 2.0


def test_decode_never_raises_on_garbage():
    assert decode_image(b"", 32) is None
    assert decode_image(b"GIF89a not really", 32) is None
    assert decode_image("/nonexistent/file.jpg", 32) is None


def test_missing_and_empty_root_errors(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; pass --config.data_dir=.*"
                                        r"--config.dataset=synthetic"):
        scan_folder(str(tmp_path / "nope"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"contains no images with extensions .*"
                                        r"expected root/<class>/\*\.jpg"):
        load_folder_arrays(str(tmp_path / "empty"), 32, progress=False)
    assert issubclass(DataError, ValueError)


def test_all_files_bad_raises(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="could be decoded"):
        load_folder_arrays(str(tmp_path), 32, progress=False)


def test_unlabeled_flat_folder(tmp_path, jpegs):
    for i, p in enumerate(jpegs[0]):
        shutil.copyfile(p, tmp_path / f"{i}.jpeg")
    (tmp_path / ".hidden.jpg").write_bytes(b"")  # ignored, e.g. macOS "._" files
    images, labels, names, skipped = load_folder_arrays(str(tmp_path), 40, progress=False)
    assert images.shape == (3, 40, 40, 3) and skipped == [] and names == []
    assert labels.dtype == np.int32 and labels.tolist() == [-1, -1, -1]


def test_tfds_without_its_data_directory_names_every_way_out(tmp_path):
    from effssl_jax.data import sources
    with pytest.raises(DataError) as e:
        sources._tfds_builder("imagenette", str(tmp_path / "nowhere"))
    message = str(e.value)
    assert "nowhere does not exist" in message and "tfds build imagenette" in message
    assert "--config.dataset=folder:PATH" in message and "--config.dataset=synthetic" in message
