"""The paper's Table 3 scaled to this machine: trains the six rows of configs/imagenette_ablation.py
one after another (each resumable: rerun the command to continue) and prints the table.

    python benchmarks/imagenette_ablation.py                     # all rows, baseline 30 epochs
    python benchmarks/imagenette_ablation.py --epochs 10 --rows ca,f1clr+sp+ha
    python benchmarks/imagenette_ablation.py --table-only        # table from finished runs

Writes RUNS/<row>/ (workdirs) and OUT/{table.md,table.csv} plus the report plots when
effssl_jax.report is available. Speed-ups are against the `ca` row: FLOPs from XLA's cost
analysis of each compiled step, wall-clock from the runs' train_time_s (compile, evaluation and
checkpoint time excluded).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys

ROWS = ("ca", "f1clr", "ca+ha", "f1clr+sp", "f1clr+ha", "f1clr+sp+ha")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("row", "epochs", "kNN init %", "kNN %", "PFLOPs", "FLOP speed-up", "train time s",
           "wall-clock speed-up", "eq. 9 M", "selection overhead")


def run_row(row: str, epochs: int, runs: str, data_dir: str) -> str:
    workdir = os.path.join(runs, row.replace("+", "_"))
    if os.path.exists(os.path.join(workdir, "summary.json")):
        return workdir
    cmd = [sys.executable, os.path.join(REPO, "launch.py"),
           f"--config={os.path.join(REPO, 'configs', 'imagenette_ablation.py')}:{row},{epochs}",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.progress_bar=False"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return workdir


def table(workdirs: dict[str, str]) -> list[dict]:
    summaries = {}
    for row, d in workdirs.items():
        path = os.path.join(d, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                summaries[row] = json.load(f)
    base = summaries.get("ca")
    rows = []
    for row, s in summaries.items():
        rows.append({
            "row": row, "epochs": round(s["epochs"], 1),
            "kNN init %": round(100 * s["knn_top1_init"], 2), "kNN %": round(100 * s["knn_top1"], 2),
            "PFLOPs": round(s["total_pflops"], 3),
            "FLOP speed-up": round(base["total_pflops"] / s["total_pflops"], 2) if base else "",
            "train time s": round(s["train_time_s"]),
            "wall-clock speed-up": round(base["train_time_s"] / s["train_time_s"], 2) if base else "",
            "eq. 9 M": round(s["predicted_speedup_resolution"], 2),
            "selection overhead": f"{100 * s['selection_overhead']:.1f}%"})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="baseline epochs E (efficient: 0.6 E)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data",
                                                        "imagenette2-160"))
    ap.add_argument("--runs", default=os.path.join(REPO, "runs", "imagenette_ablation"))
    ap.add_argument("--out", default=os.path.join(REPO, "results", "imagenette_ablation"))
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        sys.exit(f"error: unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    workdirs = {r: os.path.join(args.runs, r.replace("+", "_")) for r in rows}
    if not args.table_only:
        for r in rows:
            run_row(r, args.epochs, args.runs, os.path.abspath(args.data_dir))

    result = table(workdirs)
    os.makedirs(args.out, exist_ok=True)
    md = markdown(result)
    print(md)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}\n\n"
                f"Command: python benchmarks/imagenette_ablation.py --epochs {args.epochs}\n\n{md}\n")
    with open(os.path.join(args.out, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(result)
    try:
        from effssl_jax import report  # noqa: F401
    except ImportError:
        return
    finished = [d for d in workdirs.values() if os.path.exists(os.path.join(d, "summary.json"))]
    subprocess.run([sys.executable, "-m", "effssl_jax.report", *finished, "--out", args.out],
                   check=False)


if __name__ == "__main__":
    main()
