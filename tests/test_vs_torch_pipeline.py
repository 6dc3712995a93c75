"""benchmarks/vs_torch_training.py's PyTorch side reads the files through its own pipeline
(ImageFolder, the methods' official transforms) and meets the library's on the kNN protocol: the
same files in the same order, the same fixed subsets, the same evaluation crops; its table puts
each label of a folder of runs in its own column with the seed noise."""
import json
import os

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("vs_torch_training")


def test_knn_subset_is_the_librarys(bench):
    from effssl_jax.data import pipeline
    for n, limit, seed in ((100, 10, 3), (3925, 2000, 0), (50, 0, 1), (5, 10, 0)):
        ours, theirs = bench.knn_subset(n, limit, seed), pipeline._subset(n, limit, seed)
        assert (ours is None and theirs is None) or np.array_equal(ours, theirs)


def test_official_transforms(bench):
    from PIL import Image
    from torchvision import transforms as T
    simsiam = bench.simsiam_augmentation(64).transforms
    assert [type(t) for t in simsiam] == [T.RandomResizedCrop, T.RandomApply, T.RandomGrayscale,
                                          T.RandomApply, T.RandomHorizontalFlip, T.ToTensor,
                                          T.Normalize]
    assert simsiam[0].scale == (0.2, 1.0) and (simsiam[1].p, simsiam[2].p) == (0.8, 0.2)
    assert isinstance(simsiam[3].transforms[0], bench.PILGaussianBlur) and simsiam[3].p == 0.5
    simclr = bench.simclr_augmentation(64).transforms
    assert simclr[0].scale == (0.08, 1.0) and isinstance(simclr[1], T.RandomHorizontalFlip)
    jitter = simclr[2].transforms[0]
    assert jitter.brightness == pytest.approx((0.2, 1.8)) and jitter.hue == (-0.2, 0.2)
    assert simclr[4].transforms[0].kernel_size == (7, 7)  # 10% of 64 px, odd: TF's 2 (6 // 2) + 1
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8))
    for make in (bench.simsiam_augmentation, bench.simclr_augmentation):
        views = bench.TwoCropsTransform(make(64))(image)
        assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 2
        assert not np.array_equal(views[0].numpy(), views[1].numpy())


def test_the_sides_read_the_same_files_and_crops(bench, image_folder):
    """ImageFolder lists the library's files in its order (so a subset's indices name the same
    images), and torchvision's Resize + CenterCrop gives the library's evaluation crops."""
    from torchvision import datasets

    from effssl_jax.data import folder
    root = image_folder()
    for split in ("train", "val"):
        paths, labels, _ = folder.scan_folder(os.path.join(root, split))
        data = datasets.ImageFolder(os.path.join(root, split))
        assert [p for p, _ in data.samples] == paths
        assert [y for _, y in data.samples] == labels.tolist()
    crop = bench.eval_transform(24, 0.875).transforms[:2]  # without ToTensor, Normalize
    library = folder.CenterCrop(24, 0.875)
    for path, _ in datasets.ImageFolder(os.path.join(root, "val")).samples:
        theirs = np.asarray(crop[1](crop[0](datasets.folder.default_loader(path))))
        np.testing.assert_array_equal(theirs, library(path)[0])


def _run(out, method, label, seed, loss, knn, seconds=(10.0,)):
    run = {"method": method, "label": label, "framework": label.split("-")[0], "seed": seed,
           "epochs": len(loss), "steps": 3 * len(loss), "steps_per_epoch": 3, "loss": loss,
           "knn": {str(e): v for e, v in enumerate(knn)}, "seconds": list(seconds)}
    with open(os.path.join(out, f"{method}_{label}_s{seed}.json"), "w") as f:
        json.dump(run, f)


def test_table(bench, tmp_path):
    _run(tmp_path, "simsiam", "torch", 0, [1.0], [0.10, 0.30])
    _run(tmp_path, "simsiam", "torch", 1, [1.2], [0.10, 0.34])
    _run(tmp_path, "simsiam", "jax-bdced92", 0, [0.5], [0.12, 0.20])
    _run(tmp_path, "simsiam", "jax", 0, [0.9], [0.11, 0.31])
    _run(tmp_path, "simsiam", "jax", 1, [0.9], [0.11, 0.35])
    with open(tmp_path / "simsiam_torch-library_s0.json", "w") as f:  # before --label: left out
        json.dump({"method": "simsiam", "framework": "torch", "loss": [9.0] * 4}, f)
    lines = bench.table(str(tmp_path)).splitlines()
    assert lines[0] == "## simsiam"
    assert lines[2] == "jax: s0, s1; torch: s0, s1; jax-bdced92: s0"  # jax, torch, the others
    assert lines[6] == ("| epoch | loss, jax | loss, torch | loss, jax-bdced92 | loss noise "
                        "| kNN top-1 %, jax | kNN top-1 %, torch | kNN top-1 %, jax-bdced92 "
                        "| kNN noise |")
    assert lines[8] == "| 0 | – | – | – | – | 11.00 ± 0.00 | 10.00 ± 0.00 | 12.00 | 0.00 |"
    assert lines[9] == ("| 1 | 0.9000 ± 0.0000 | 1.1000 ± 0.1000 | 0.5000 | 0.1000 "
                        "| 33.00 ± 2.00 | 32.00 ± 2.00 | 20.00 | 2.00 |")
    assert "9.0" not in "\n".join(lines)


def test_init_knn_separates_the_weights_from_the_networks(bench, image_folder):
    """--init-knn: torchvision's initial weights give the same kNN in PyTorch and copied into the
    library's network on the library's uint8 crops (so the columns differ only by the draw), and
    the library's column is its own run's initialisation."""
    root = image_folder(per_class=6)
    lines = bench.init_knn("simclr", [0, 3], data=root).splitlines()
    rows = [[float(v) for v in line.strip("| ").split(" | ")[1:]] for line in lines[3:5]]
    for torch_knn, _, copied in rows:
        assert copied == pytest.approx(torch_knn)
    assert lines[5].startswith("| mean ± std |")
