"""The paper's Table 3 scaled to this machine: trains the six rows of configs/imagenette_ablation.py
one after another (each resumable: rerun the command to continue) and prints the table.

    python benchmarks/imagenette_ablation.py                     # all rows, baseline 30 epochs
    python benchmarks/imagenette_ablation.py --epochs 10 --rows ca,f1clr+sp+ha
    python benchmarks/imagenette_ablation.py --table-only        # table from finished runs
    python benchmarks/imagenette_ablation.py --table-only --time-steps   # + step-time speed-ups
    python benchmarks/imagenette_ablation.py --scale cifar16     # CIFAR stem at 16 px
    python benchmarks/imagenette_ablation.py --scale cifar16 --seed 1            # another seed
    python benchmarks/imagenette_ablation.py --scale cifar16 --seeds-table 0,1   # spread over seeds
    python benchmarks/imagenette_ablation.py --scale cifar16 --out NEW --compare-to OLD  # by row
    python benchmarks/imagenette_ablation.py --scale vit32 --epochs 5 --rows ca,f1clr+sp

Scales: imagenet32 (default) and cifar16 (configs/imagenette_ablation.py, ResNet-18 SimCLR), and
vit32 (configs/imagenette_vit.py: MoCo v3 with a ViT-Tiny of 4 px patches at 32 px).

Writes RUNS/<row>/ (workdirs; RUNS and OUT end in _cifar16 for that scale) and
OUT/{table.md,table.csv} plus the report plots. Speed-ups are against the `ca` row: FLOPs from
XLA's cost analysis of each bucket's step, wall-clock from the runs' train_time_s (compile,
evaluation and checkpoint time excluded). On a shared machine the runs' wall-clock is skewed by
whatever else ran meanwhile; --time-steps therefore also times every row's compiled bucket steps
side by side (interleaved rounds, median) and predicts each row's training time as the sum over
buckets of steps x step time: the "step-time speed-up" column.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/ and this checkout's effssl_jax
from configs.ablation import ROWS  # noqa: E402
from configs.imagenette_ablation import DEFAULT_SCALE, SCALES  # noqa: E402

COLUMNS = ("row", "epochs", "kNN init %", "kNN %", "linear %", "PFLOPs", "FLOP speed-up",
           "train time s", "wall-clock speed-up", "step-time speed-up", "eq. 9 M",
           "selection overhead")


VIT_SCALE = "vit32"  # configs/imagenette_vit.py
IMAGENETTE_TRAIN = 9469  # train images of every scale; the timed rows' step counts follow from it


def config_arg(row: str, epochs: int, scale: str) -> str:
    if scale == VIT_SCALE:
        return f"{os.path.join(REPO, 'configs', 'imagenette_vit.py')}:{row},{epochs}"
    return f"{os.path.join(REPO, 'configs', 'imagenette_ablation.py')}:{row},{epochs},{scale}"


def row_dir(runs: str, row: str) -> str:
    return os.path.join(runs, row.replace("+", "_"))


def read_summary(workdir: str) -> dict | None:
    """The run's summary.json, or None while the run has not finished."""
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_row(row: str, epochs: int, scale: str, runs: str, data_dir: str, seed: int) -> str:
    workdir = row_dir(runs, row)
    if read_summary(workdir) is not None:
        return workdir
    cmd = [sys.executable, os.path.join(REPO, "launch.py"),
           f"--config={config_arg(row, epochs, scale)}",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.seed={seed}",
           "--config.progress_bar=False"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return workdir


def step_times(rows: list[str], epochs: int, scale: str, rounds: int = 5) -> dict[str, float]:
    """Predicted training seconds of each row from its plan's steps per bucket and the median
    time of its compiled bucket steps, all steps timed interleaved in this process.

    The steps are compiled with launch.py's XLA:CPU flags (`cpu_flags`), so the step timed is the
    step trained; without them XLA:CPU compiles other convolution kernels. This sets XLA_FLAGS,
    so it must run before the process's first JAX computation (main runs none before it)."""
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()
    import statistics
    import time

    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax import config_schema, experiment
    from effssl_jax.data.canvas import Images
    from effssl_jax.step import data_mesh

    mesh = data_mesh(jax.devices()[:1])
    timed = {}  # StepSpec -> [compiled step, state, images, times]; shared by rows (same cost)
    row_steps = {}  # row -> [(StepSpec, steps run)]
    for row in rows:
        config = config_schema.from_recipe(config_arg(row, epochs, scale))
        exp = experiment.build(config, IMAGENETTE_TRAIN, mesh)
        steps = exp.compiled_steps()
        row_steps[row] = []
        for r, n in exp.plan.steps_by_resolution().items():
            host = exp.host_size(r)  # the streaming loader's canvas of the bucket
            spec = exp.spec(r, host.canvas)
            row_steps[row].append((spec, n))
            if spec not in timed:  # Imagenette's 160 px squares, kept whole
                side = min(160, host.short)
                pixels = np.zeros((config.batch_size, host.canvas, host.canvas, 3), np.uint8)
                pixels[:, :side, :side] = np.random.default_rng(0).integers(
                    0, 256, (config.batch_size, side, side, 3), dtype=np.uint8)
                images = jax.device_put(
                    Images(pixels, np.full((config.batch_size, 2), side, np.int32)),
                    NamedSharding(mesh, P("data")))
                timed[spec] = [steps.get(spec), exp.init(jax.random.key(0)), images, []]
    for _ in range(rounds + 1):  # the first round warms up
        for entry in timed.values():
            step, state, images, times = entry
            start = time.perf_counter()
            entry[1], metrics = step(state, images, np.float32(5.0))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    median = {spec: statistics.median(entry[3][1:]) for spec, entry in timed.items()}
    for spec, t in median.items():
        print(f"{spec.resolution:4d} px, {spec.num_views} views: {1000 * t:7.1f} ms/step",
              flush=True)
    return {row: sum(n * median[spec] for spec, n in pairs) for row, pairs in row_steps.items()}


def table(workdirs: dict[str, str],
          predicted_seconds: dict[str, float] | None = None) -> list[dict]:
    summaries = {row: s for row, d in workdirs.items() if (s := read_summary(d)) is not None}
    base = summaries.get("ca")
    rows = []
    for row, s in summaries.items():
        rows.append({
            "row": row, "epochs": round(s["epochs"], 1),
            "kNN init %": round(100 * s["knn_top1_init"], 2),
            "kNN %": round(100 * s["knn_top1"], 2),
            "linear %": "" if (linear := latest_linear(workdirs[row])) is None
            else round(linear, 2),
            "PFLOPs": round(s["total_pflops"], 3),
            "FLOP speed-up": round(base["total_pflops"] / s["total_pflops"], 2) if base else "",
            "train time s": round(s["train_time_s"]),
            "wall-clock speed-up": (round(base["train_time_s"] / s["train_time_s"], 2)
                                    if base else ""),
            "step-time speed-up": round(predicted_seconds["ca"] / predicted_seconds[row], 2)
            if predicted_seconds and "ca" in predicted_seconds else "",
            "eq. 9 M": round(s["predicted_speedup_resolution"], 2),
            "selection overhead": f"{100 * s['selection_overhead']:.1f}%"})
    return rows


def late_knn(workdir: str, fraction: float = 0.4) -> list[tuple[float, float]]:
    """(epoch, kNN top-1 %) of a run's evaluations over its last `fraction` of epochs: whether the
    run was still improving when it ended."""
    from effssl_jax.run_log import read_metrics
    epochs = read_summary(workdir)["epochs"]
    return [(m["epoch"], 100 * m["knn_top1"]) for m in read_metrics(workdir)
            if "knn_top1" in m and m["epoch"] >= (1 - fraction) * epochs - 1e-9]


def late_knn_line(workdir: str, fraction: float = 0.4) -> str:
    return (f"CA's kNN over its last {100 * fraction:.0f}% of epochs: " + ", ".join(
        f"epoch {e:.1f}: {k:.2f}%" for e, k in late_knn(workdir, fraction)))


def markdown(rows: list[dict], columns=COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def default_dir(kind: str, scale: str, seed: int) -> str:
    suffix = ("" if scale == DEFAULT_SCALE else f"_{scale}") + (f"_seed{seed}" if seed else "")
    return os.path.join(REPO, kind, "imagenette_ablation" + suffix)


def latest_linear(workdir: str) -> float | None:
    """Top-1 % of the latest linear probe `python -m effssl_jax.evaluate` ran on the workdir."""
    from effssl_jax.evaluate import read_eval_records
    return next((100 * r["linear"]["top1"] for r in reversed(read_eval_records(workdir))
                 if "linear" in r), None)


def final_accuracies(workdir: str) -> tuple[float | None, float | None]:
    """(kNN, linear) top-1 % of a finished run: the train loop's last kNN, and the latest
    linear probe if one was run."""
    summary = read_summary(workdir)
    if summary is None:
        return None, None
    return 100 * summary["knn_top1"], latest_linear(workdir)


def seeds_table(rows: list[str], scale: str, seeds: list[int]) -> tuple[list[dict], tuple]:
    """Per row, kNN and linear top-1 of each seed's run (runs/..._seedN, default folders), their
    mean, and the mean difference to the `ca` row over the seeds both finished."""
    def fmt(values):
        return " / ".join("–" if v is None else f"{v:.2f}" for v in values)

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{sum(values) / len(values):.2f}" if values else "–"

    acc = {r: [final_accuracies(row_dir(default_dir("runs", scale, s), r)) for s in seeds]
           for r in rows}
    base = acc.get("ca", [(None, None)] * len(seeds))
    seeds_s = "/".join(map(str, seeds))
    columns = ("row", f"kNN % (seeds {seeds_s})", "kNN mean", "kNN vs CA",
               f"linear % (seeds {seeds_s})", "linear mean", "linear vs CA")
    out = []
    for r in rows:
        line = {"row": r}
        for i, name in ((0, "kNN"), (1, "linear")):
            values = [a[i] for a in acc[r]]
            line[f"{name} % (seeds {seeds_s})"], line[f"{name} mean"] = fmt(values), mean(values)
            diffs = [v - b[i] for v, b in zip(values, base) if v is not None and b[i] is not None]
            line[f"{name} vs CA"] = (f"{sum(diffs) / len(diffs):+.2f}" if diffs and r != "ca"
                                     else "–")
        out.append(line)
    return out, columns


def _csv_rows(path: str, key: str) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r[key]: r for r in csv.DictReader(f)}


def comparison(old_out: str, new_out: str) -> list[dict]:
    """Row by row, the table in `old_out` against the one in `new_out` (each an --out folder:
    table.csv, and the report's results.csv for the linear probe): kNN and linear top-1 %, each
    row's gap to CA, PFLOPs, and the new table's speed-ups. Cells are read from the files, so a
    comparison can be rebuilt from committed records alone."""
    def accuracies(out):
        table = _csv_rows(os.path.join(out, "table.csv"), "row")
        report = _csv_rows(os.path.join(out, "results.csv"), "run")
        return {row: (float(t["kNN %"]), _float(report.get(row.replace("+", "_"), {}).get(
            "linear_top1_%")), t) for row, t in table.items()}

    old, new = accuracies(old_out), accuracies(new_out)
    (ca_ok, ca_ol, _), (ca_nk, ca_nl, _) = old.get("ca", (None, None, {})), new["ca"]
    rows = []
    for row in (r for r in ROWS if r in new):
        (ok, ol, ot), (nk, nl, nt) = old.get(row, (None, None, {})), new[row]
        rows.append({
            "row": f"{row} ({float(nt['epochs']):g})",
            "kNN %, before → now": f"{_pct(ok)} → **{_pct(nk)}**",
            "linear %, before → now": f"{_pct(ol)} → **{_pct(nl)}**",
            "gap to CA, kNN / linear: before → now": "–" if row == "ca" else (
                f"{_gap(ok, ca_ok)} / {_gap(ol, ca_ol)} → {_gap(nk, ca_nk)} / {_gap(nl, ca_nl)}"),
            "PFLOPs before / now": f"{ot.get('PFLOPs', '')} / {nt['PFLOPs']}",
            "FLOP speed-up": f"{float(nt['FLOP speed-up']):.2f}x",
            "step-time speed-up": (f"{float(nt['step-time speed-up']):.2f}x"
                                   if nt.get("step-time speed-up") else ""),
        })
    return rows


def _float(text):
    return float(text) if text not in (None, "") else None


def _pct(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _gap(value, baseline) -> str:
    return "" if value is None or baseline is None else f"{value - baseline:+.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="baseline epochs E (efficient: 0.6 E)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--scale", default=DEFAULT_SCALE, choices=(*SCALES, VIT_SCALE))
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data",
                                                        "imagenette2-160"))
    ap.add_argument("--seed", type=int, default=0,
                    help="config.seed of every row (initialisation, data order, augmentations)")
    ap.add_argument("--runs", help="default: runs/imagenette_ablation[_cifar16][_seedN]")
    ap.add_argument("--out", help="default: results/imagenette_ablation[_cifar16][_seedN]")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--time-steps", action="store_true",
                    help="also time every row's bucket steps side by side (a few minutes)")
    ap.add_argument("--compare-to", metavar="OLD_OUT",
                    help="only print OUT's table against OLD_OUT's, row by row (both --out "
                         "folders), and write it to OUT/comparison.md")
    ap.add_argument("--seeds-table", metavar="SEEDS",
                    help="only write OUT/seeds.md: kNN and linear top-1 of the finished runs of "
                         "these seeds (comma-separated), in the default runs folders")
    args = ap.parse_args()
    args.runs = args.runs or default_dir("runs", args.scale, args.seed)
    args.out = args.out or default_dir("results", args.scale, args.seed)
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        sys.exit(f"error: unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    if args.compare_to:
        rows_ = comparison(args.compare_to, args.out)
        md = markdown(rows_, list(rows_[0]))
        print(md)
        with open(os.path.join(args.out, "comparison.md"), "w") as f:
            f.write(f"Command: python benchmarks/imagenette_ablation.py --scale {args.scale} "
                    f"--out {os.path.relpath(args.out, REPO)} --compare-to "
                    f"{os.path.relpath(args.compare_to, REPO)}\n\n{md}\n")
        return
    if args.seeds_table:
        seeds = [int(s) for s in args.seeds_table.split(",")]
        md = markdown(*seeds_table(rows, args.scale, seeds))
        print(md)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "seeds.md"), "w") as f:
            f.write(f"Command: python benchmarks/imagenette_ablation.py --scale {args.scale} "
                    f"--seeds-table {args.seeds_table}\n\n{md}\n")
        return
    workdirs = {r: row_dir(args.runs, r) for r in rows}
    if not args.table_only:
        for r in rows:
            run_row(r, args.epochs, args.scale, args.runs, os.path.abspath(args.data_dir),
                    args.seed)

    finished = {r: d for r, d in workdirs.items() if read_summary(d) is not None}
    predicted = (step_times(list(finished), args.epochs, args.scale)
                 if args.time_steps and finished else None)
    result = table(workdirs, predicted)
    os.makedirs(args.out, exist_ok=True)
    md = markdown(result)
    if "ca" in finished:
        md += "\n\n" + late_knn_line(finished["ca"])
    print(md)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
                f"{platform.platform()}\n\n"
                f"Command: python benchmarks/imagenette_ablation.py --epochs {args.epochs} "
                f"--scale {args.scale} --seed {args.seed}\n\n{md}\n")
    with open(os.path.join(args.out, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(result)
    subprocess.run([sys.executable, "-m", "effssl_jax.report", *finished.values(),
                    "--out", args.out], check=False)


if __name__ == "__main__":
    main()
