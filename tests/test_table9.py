"""configs/imagenette_table9.py's rows and benchmarks/imagenette_table9.py's plan of equal-FLOP
baselines and its table, from finished workdirs."""
import json
import os

import pytest
from conftest import load_benchmark

from configs import imagenette_table9
from effssl_jax import config_schema


def test_rows_are_table_9s_variants_of_one_baseline():
    rows = {r: imagenette_table9.get_config(f"{r},7") for r in imagenette_table9.ROWS}
    for c in rows.values():
        config_schema.validate(c)
        assert c.epochs == 7 and c.progressive.r_max == 16 and c.model.cifar_stem
    ha, et, mc, base = rows["ha"], rows["ha+et"], rows["mc"], rows["base"]
    assert not base.hard_augment.enabled and base.augment.local_crops.count == 0
    assert ha.hard_augment.enabled and not ha.hard_augment.extra_targets
    assert (ha.hard_augment.num_views, ha.hard_augment.r_sel) == (4, 12)
    assert et.hard_augment.enabled and et.hard_augment.extra_targets
    # multi-crop: no selection; the two other views of 4 as targets at the scored resolution,
    # drawn as the trained views are
    assert not mc.hard_augment.enabled
    assert (mc.augment.local_crops.count, mc.augment.local_crops.resolution) == (2, 12)
    assert tuple(mc.augment.local_crops.scale) == (0.2, 1.0)
    for c in rows.values():  # one baseline underneath: they differ only in the keys above
        for key in ("optim", "model", "progressive", "simclr", "batch_size", "seed"):
            assert c[key] == base[key]
    with pytest.raises(ValueError, match="unknown Table 9 row"):
        imagenette_table9.get_config("ca+ha")


def _workdir(path, pflops, knn, linear):
    os.makedirs(path)
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"epochs": 10, "knn_top1": knn, "total_pflops": pflops,
                   "selection_overhead": 0.1 if pflops > 1 else 0.0}, f)
    with open(os.path.join(path, "eval.json"), "w") as f:
        json.dump([{"linear": {"top1": linear}}], f)


def test_equal_flop_baselines_follow_the_rows_measured_flops(tmp_path):
    bench = load_benchmark("imagenette_table9")
    runs = str(tmp_path)
    assert [w for _, _, w in bench.plan(runs, 10)] == [
        os.path.join(runs, d) for d in ("base", "ha", "ha_et", "mc")]  # nothing known yet
    _workdir(tmp_path / "base", 1.0, 0.40, 0.45)
    _workdir(tmp_path / "ha", 1.54, 0.43, 0.47)
    _workdir(tmp_path / "ha_et", 1.46, 0.42, 0.46)  # rounds to the same 15 epochs: one run
    _workdir(tmp_path / "mc", 1.21, 0.41, 0.44)
    assert bench.plan(runs, 10)[4:] == [("base", 15, os.path.join(runs, "base_e15")),
                                        ("base", 12, os.path.join(runs, "base_e12"))]
    _workdir(tmp_path / "base_e15", 1.5, 0.415, 0.465)
    rows = {r["row"]: r for r in bench.table(runs, 10)}
    assert rows["ha"]["FLOPs vs base"] == 1.54 and rows["ha"]["equal-FLOP base"] == "15 epochs"
    assert rows["ha"]["kNN vs equal-FLOP base"] == "+1.50"
    assert rows["ha"]["linear vs equal-FLOP base"] == "+0.50"
    assert rows["ha+et"]["kNN vs equal-FLOP base"] == "+0.50"
    assert rows["mc"]["equal-FLOP base"] == ""  # its baseline has not run
    assert rows["base, 15 epochs"]["kNN %"] == 41.5


def test_no_probe_leaves_the_probes_to_a_later_run(tmp_path):
    bench = load_benchmark("imagenette_table9")
    for row in ("base", "ha", "ha_et", "mc"):
        _workdir(tmp_path / row, 1.0, 0.40, 0.45)
    os.remove(tmp_path / "ha" / "eval.json")  # trained, not probed
    assert bench.pending(str(tmp_path), 10, probe=False) == []
    assert bench.pending(str(tmp_path), 10) == [("ha", 10)]


def test_seeds_table_averages_the_differences_over_seeds(tmp_path):
    bench = load_benchmark("imagenette_table9")
    for seed, (knn_ha, knn_twin) in enumerate([(0.43, 0.41), (0.40, 0.41)]):
        runs = tmp_path / f"s{seed}"
        _workdir(runs / "base", 1.0, 0.40, 0.45)
        _workdir(runs / "ha", 1.5, knn_ha, 0.47)
        _workdir(runs / "base_e15", 1.5, knn_twin, 0.46)
    rows = {r["row"]: r for r in bench.seeds_table(lambda s: str(tmp_path / f"s{s}"), 10, [0, 1])}
    assert rows["ha"]["kNN % per seed"] == "43.0 / 40.0"
    assert rows["ha"]["kNN mean"] == "41.50"
    assert rows["ha"]["kNN vs equal-FLOP base"] == "+0.50"  # (+2 - 1) / 2
    assert rows["ha"]["linear vs equal-FLOP base"] == "+1.00"
