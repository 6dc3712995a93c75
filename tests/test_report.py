"""The report on two tiny runs (SimSiam baseline and F1-CLR recipe): the speed-up is the ratio of
their measured PFLOPs, the table names the paper's columns, the figures are written."""
import csv
import json
import os

import pytest

from effssl_jax import report


def test_report_speedup_is_ratio_of_pflops(two_runs, tmp_path):
    base, f1clr = two_runs
    out = tmp_path / "report"
    report.main([f1clr, base, "--out", str(out)])  # the baseline is found: cosine, most epochs
    rows = {r["run"]: r for r in csv.DictReader(open(out / "results.csv"))}
    b, f = (report.load_run(d).summary for d in (base, f1clr))
    assert rows["baseline"]["speedup_flops"] == "1.00"
    assert float(rows["f1clr"]["speedup_flops"]) == pytest.approx(
        b["total_pflops"] / f["total_pflops"], abs=0.005)
    assert b["total_pflops"] != f["total_pflops"]
    assert float(rows["f1clr"]["speedup_flops_paper"]) == pytest.approx(  # its own convention
        b["pflops_paper"] / f["pflops_paper"], abs=0.005)
    assert b["total_pflops"] > b["pflops_paper"]  # XLA counts the real backward
    assert (rows["f1clr"]["lr_schedule"], rows["f1clr"]["SP"], rows["f1clr"]["HA"]) == \
        ("f1clr", "SP", "yes")
    assert (rows["baseline"]["lr_schedule"], rows["baseline"]["SP"], rows["baseline"]["HA"]) == \
        ("cosine", "-", "-")
    md = (out / "results.md").read_text()
    for header in ("method", "LR schedule", "SP", "HA", "kNN top-1 (%)", "linear top-1 (%)",
                   "PFLOPs", "speed-up (FLOPs)", "wall-clock (s)", "images/s"):
        assert f"| {header} |" in md or f" {header} |" in md
    for png in ("fig2_lr_momentum.png", "fig3_resolution_magnitude.png", "knn_vs_cost.png"):
        assert os.path.getsize(out / png) > 10_000


def test_baseline_flag_and_cost_curve(two_runs, tmp_path):
    base, f1clr = two_runs
    rows = report.build_report([base, f1clr], str(tmp_path), baseline=f1clr)
    assert rows[1]["speedup_flops"] == "1.00"
    run = report.load_run(f1clr)
    points = report._cumulative_cost(run)
    assert [p[0] for p in points] == [m["knn_top1"] for m in run.knn_rows]
    assert points[0][1] == 0.0 and points[-1][1] == pytest.approx(run.summary["total_pflops"])
    assert all(a[1] < b[1] and a[2] < b[2] for a, b in zip(points, points[1:]))


def test_cost_curve_of_runs_logged_without_cost_fields(two_runs):
    """Runs from before eval lines carried pflops/train_time_s: the curve is rebuilt from the
    logged steps (every step logged here, so the PFLOPs agree with the recorded ones)."""
    run = report.load_run(two_runs[1])
    recorded = report._cumulative_cost(run)
    for m in run.metrics:
        m.pop("pflops", None), m.pop("train_time_s", None), m.pop("wall_clock_s", None)
    rebuilt = report._cumulative_cost(run)
    assert [p[0] for p in rebuilt] == [p[0] for p in recorded]
    assert [p[1] for p in rebuilt] == pytest.approx([p[1] for p in recorded], rel=1e-6)
    assert rebuilt[-1][2] > 0


def test_runs_past_the_tenth_keep_their_own_line_style():
    fig, (ax, _) = report._subplots(1, 2)
    lines = [ax.plot([0, 1], [0, i])[0] for i in range(12)]
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 12
    report.plt.close(fig)


def _tensorboard_scalars(workdir) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the event files in WORKDIR/tensorboard (TFRecord framing: length,
    its CRC, an Event proto, its CRC), read without TensorBoard."""
    import glob
    import struct

    from tensorboardX.proto.event_pb2 import Event
    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_tensorboard_has_the_metrics_of_metrics_jsonl(two_runs):
    base, _ = two_runs
    scalars = _tensorboard_scalars(base)
    records = [json.loads(line) for line in open(os.path.join(base, "metrics.jsonl"))]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    knn = {r["step"]: r["knn_top1"] for r in records if "knn_top1" in r}
    assert scalars["loss"] == pytest.approx(losses) and len(losses) == 8
    assert scalars["knn_top1"] == pytest.approx(knn) and 0 in knn
    assert {"lr", "momentum", "resolution", "images_per_sec"} <= set(scalars)


def test_fig2_names_the_momentum_each_optimizer_logs():
    def run(optimizer):
        return report.Run(workdir="", label="", config={"optim": {"optimizer": optimizer}},
                          summary={}, metrics=[], evals=[])
    assert report.momentum_name([run("sgd"), run("sgd")]) == "SGD momentum"
    assert report.momentum_name([run("adamw")]) == "AdamW beta1"
    assert report.momentum_name([run("sgd"), run("adamw")]) == "momentum (SGD) / beta1 (AdamW)"
