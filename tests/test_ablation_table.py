"""benchmarks/imagenette_ablation.py's table from finished workdirs: the linear probe beside kNN,
and the baseline's kNN over its last 40% of epochs (was it still rising?); the flags under which
--time-steps compiles."""
import json
import os

import pytest
from conftest import load_benchmark


def _benchmark():
    return load_benchmark("imagenette_ablation")


def _workdir(path, epochs, knn, pflops, linear=None):
    os.makedirs(path)
    summary = {"epochs": epochs, "knn_top1_init": 0.1, "knn_top1": knn[-1][1],
               "total_pflops": pflops, "train_time_s": 10 * pflops,
               "predicted_speedup_resolution": 1.0, "selection_overhead": 0.0}
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for step, (epoch, top1) in enumerate(knn):
            f.write(json.dumps({"step": step, "epoch": epoch, "knn_top1": top1}) + "\n")
            f.write(json.dumps({"step": step, "epoch": epoch, "loss": 1.0}) + "\n")
    if linear is not None:
        with open(os.path.join(path, "eval.json"), "w") as f:
            json.dump([{"linear": {"top1": linear}}], f)
    return str(path)


def test_table_has_linear_accuracy_and_the_baselines_late_knn(tmp_path):
    bench = _benchmark()
    ca = _workdir(tmp_path / "ca", 100, [(0, 0.1), (50, 0.40), (62.5, 0.42), (87.4521, 0.445),
                                         (100, 0.45)], 2.0, linear=0.5)
    sp = _workdir(tmp_path / "sp", 60, [(0, 0.1), (60, 0.43)], 0.8)
    rows = {r["row"]: r for r in bench.table({"ca": ca, "f1clr+sp": sp})}
    assert rows["ca"]["linear %"] == 50.0 and rows["f1clr+sp"]["linear %"] == ""
    assert rows["f1clr+sp"]["FLOP speed-up"] == 2.5
    assert bench.late_knn(ca) == [(62.5, 42.0), (87.4521, 44.5), (100, 45.0)]
    assert bench.late_knn_line(ca) == ("CA's kNN over its last 40% of epochs: epoch 62.5: 42.00%, "
                                       "epoch 87.5: 44.50%, epoch 100.0: 45.00%")


def test_step_timing_compiles_with_the_flags_launch_sets(monkeypatch):
    """--time-steps must time the step launch.py trains: XLA:CPU compiles other convolution
    kernels without launch.py's flags, which skews the step-time speed-ups of the SP rows."""
    from effssl_jax import cpu_flags, experiment
    bench = _benchmark()

    class Built(Exception):
        pass

    def build(*args, **kwargs):
        raise Built(os.environ.get("XLA_FLAGS"))

    monkeypatch.setenv("XLA_FLAGS", "")  # so that teardown restores the caller's XLA_FLAGS
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(experiment, "build", build)
    with pytest.raises(Built) as built:
        bench.step_times(["ca"], 30, "cifar16")
    assert built.value.args[0] == cpu_flags.default_flags() != ""


def _out(path, rows):
    """An --out folder: table.csv and the report's results.csv, rows {row: (kNN, linear|None)}."""
    os.makedirs(path)
    with open(os.path.join(path, "table.csv"), "w") as f:
        f.write("row,epochs,kNN %,PFLOPs,FLOP speed-up,step-time speed-up\n")
        for row, (knn, _) in rows.items():
            f.write(f"{row},30.0,{knn},0.1,1.0,\n")
    with open(os.path.join(path, "results.csv"), "w") as f:
        f.write("run,linear_top1_%\n")
        for row, (_, linear) in rows.items():
            f.write(f"{row.replace('+', '_')},{'' if linear is None else linear}\n")
    return str(path)


def test_comparison_reads_both_tables_and_the_gaps_to_ca(tmp_path):
    old = _out(tmp_path / "old", {"ca": (40.0, 50.0), "f1clr+sp": (38.5, None)})
    new = _out(tmp_path / "new", {"ca": (45.0, 52.0), "f1clr+sp": (44.0, 52.5),
                                  "ca+ha": (43.0, 51.0)})
    rows = {r["row"]: r for r in _benchmark().comparison(old, new)}
    assert list(rows) == ["ca (30)", "ca+ha (30)", "f1clr+sp (30)"]  # configs/ablation.py order
    sp = rows["f1clr+sp (30)"]
    assert sp["kNN %, before → now"] == "38.50 → **44.00**"
    assert sp["linear %, before → now"] == " → **52.50**"
    assert sp["gap to CA, kNN / linear: before → now"] == "-1.50 /  → -1.00 / +0.50"
    assert rows["ca+ha (30)"]["kNN %, before → now"] == " → **43.00**"  # a row new in this table
