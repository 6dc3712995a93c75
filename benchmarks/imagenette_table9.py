"""The paper's Table 9 scaled to this machine (configs/imagenette_table9.py): the baseline, Hard
Augment, Hard Augment with extra targets and multi-crop, each also against the baseline trained for
as many FLOPs (more epochs). Each run is resumable: rerun the command to continue.

    python benchmarks/imagenette_table9.py                  # seed 0: trains, probes, prints
    python benchmarks/imagenette_table9.py --seed 1
    python benchmarks/imagenette_table9.py --seeds-table 0,1 # mean over seeds, the verdict's table

--no-probe trains every run first; rerunning without it then adds the linear probes.

Order of work per seed: base, then each row followed by its equal-FLOP baseline: `base` with
E x (the row's PFLOPs / base's PFLOPs) epochs, rounded, from the finished runs' summary.json (XLA's
count of every step trained); rows whose FLOPs round to the same epochs share one baseline run.
Every finished run gets the linear probe (`python -m effssl_jax.evaluate --protocol linear`).

Writes RUNS/<row>/ (the equal-FLOP baselines as base_e<epochs>) and OUT/{table.md,table.csv}.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from imagenette_ablation import final_accuracies, markdown, read_summary  # noqa: E402

from configs.imagenette_table9 import DEFAULT_EPOCHS, ROWS  # noqa: E402

COLUMNS = ("row", "epochs", "kNN %", "linear %", "PFLOPs", "FLOPs vs base",
           "selection overhead", "equal-FLOP base", "kNN vs equal-FLOP base",
           "linear vs equal-FLOP base")
CONFIG = os.path.join(REPO, "configs", "imagenette_table9.py")


def workdir_of(runs: str, row: str, epochs: int, base_epochs: int) -> str:
    if row == "base" and epochs != base_epochs:
        return os.path.join(runs, f"base_e{epochs}")
    return os.path.join(runs, row.replace("+", "_"))


def equal_flop_epochs(base_epochs: int, base_pflops: float, row_pflops: float) -> int:
    """The baseline's epochs that spend the row's FLOPs (rounded to a whole epoch)."""
    return max(base_epochs, round(base_epochs * row_pflops / base_pflops))


def train(runs: str, row: str, epochs: int, base_epochs: int, data_dir: str, seed: int,
          probe: bool = True) -> str:
    """Train (or resume) the run, then (if `probe`) give it a linear probe; returns its workdir."""
    workdir = workdir_of(runs, row, epochs, base_epochs)
    if read_summary(workdir) is None:
        cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={CONFIG}:{row},{epochs}",
               f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.seed={seed}",
               "--config.progress_bar=False"]
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if probe and final_accuracies(workdir)[1] is None:
        subprocess.run([sys.executable, "-m", "effssl_jax.evaluate", f"--workdir={workdir}",
                        "--protocol=linear"], check=True)
    return workdir


def plan(runs: str, base_epochs: int) -> list[tuple[str, int, str]]:
    """(row, epochs, workdir) of every run of one seed: the rows, then the equal-FLOP baselines of
    the finished rows (unknown until the row and base have run)."""
    runs_ = [(row, base_epochs, workdir_of(runs, row, base_epochs, base_epochs)) for row in ROWS]
    base = read_summary(runs_[0][2])
    for row, _, workdir in runs_[1:]:
        summary = read_summary(workdir)
        if base is not None and summary is not None:
            e = equal_flop_epochs(base_epochs, base["total_pflops"], summary["total_pflops"])
            entry = ("base", e, workdir_of(runs, "base", e, base_epochs))
            if entry not in runs_:
                runs_.append(entry)
    return runs_


def pending(runs: str, base_epochs: int, probe: bool = True) -> list[tuple[str, int]]:
    """(row, epochs) of the planned runs not finished yet: untrained, or (if `probe`) unprobed."""
    return [(row, e) for row, e, w in plan(runs, base_epochs) if read_summary(w) is None
            or (probe and final_accuracies(w)[1] is None)]


def table(runs: str, base_epochs: int) -> list[dict]:
    done = {}  # workdir -> (row, epochs, summary) of the finished runs
    for row, epochs, workdir in plan(runs, base_epochs):
        if (summary := read_summary(workdir)) is not None:
            done[workdir] = (row, epochs, summary)
    base = done.get(workdir_of(runs, "base", base_epochs, base_epochs))
    rows = []
    for workdir, (row, epochs, s) in done.items():
        knn, linear = final_accuracies(workdir)
        r = {"row": row if epochs == base_epochs else f"base, {epochs} epochs",
             "epochs": epochs, "kNN %": round(knn, 2),
             "linear %": "" if linear is None else round(linear, 2),
             "PFLOPs": round(s["total_pflops"], 4),
             "FLOPs vs base": round(s["total_pflops"] / base[2]["total_pflops"], 2) if base else "",
             "selection overhead": f"{100 * s['selection_overhead']:.1f}%"
             if s.get("selection_overhead") else "–",
             "equal-FLOP base": "", "kNN vs equal-FLOP base": "", "linear vs equal-FLOP base": ""}
        if row != "base" and base:
            e = equal_flop_epochs(base_epochs, base[2]["total_pflops"], s["total_pflops"])
            twin = workdir_of(runs, "base", e, base_epochs)
            if twin in done:
                tk, tl = final_accuracies(twin)
                r["equal-FLOP base"] = f"{e} epochs"
                r["kNN vs equal-FLOP base"] = f"{knn - tk:+.2f}"
                if linear is not None and tl is not None:
                    r["linear vs equal-FLOP base"] = f"{linear - tl:+.2f}"
        rows.append(r)
    return rows


def seeds_table(runs_of, base_epochs: int, seeds: list[int]) -> list[dict]:
    """Per row: kNN and linear per seed, their means, and the mean difference against the
    equal-FLOP baseline (over the seeds that have both)."""
    tables = {seed: {r["row"]: r for r in table(runs_of(seed), base_epochs)} for seed in seeds}
    names = list(dict.fromkeys(r for t in tables.values() for r in t))
    out = []
    for name in names:
        got = [tables[s][name] for s in seeds if name in tables[s]]

        def per_seed(key):
            return " / ".join(str(r[key]) for r in got if r[key] != "")

        def mean(key, fmt=".2f"):
            values = [float(r[key]) for r in got if r[key] != ""]
            return format(statistics.mean(values), fmt) if values else ""

        out.append({"row": name, "seeds": len(got), "FLOPs vs base": got[0]["FLOPs vs base"],
                    "kNN % per seed": per_seed("kNN %"), "kNN mean": mean("kNN %"),
                    "kNN vs equal-FLOP base": mean("kNN vs equal-FLOP base", "+.2f"),
                    "linear % per seed": per_seed("linear %"), "linear mean": mean("linear %"),
                    "linear vs equal-FLOP base": mean("linear vs equal-FLOP base", "+.2f")})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="the baseline's epochs E")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data",
                                                        "imagenette2-160"))
    ap.add_argument("--runs", default=os.path.join(REPO, "runs", "imagenette_table9"),
                    help="runs of seed N go to RUNS_seedN (seed 0: RUNS)")
    ap.add_argument("--out", default=os.path.join(REPO, "results", "imagenette_table9"))
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--no-probe", action="store_true",
                    help="train only; a later run without the flag adds the linear probes")
    ap.add_argument("--seeds-table", metavar="SEEDS", help="only write OUT/seeds.md")
    args = ap.parse_args()

    def runs_of(seed):
        return args.runs + (f"_seed{seed}" if seed else "")

    os.makedirs(args.out, exist_ok=True)
    if args.seeds_table:
        seeds = [int(s) for s in args.seeds_table.split(",")]
        rows = seeds_table(runs_of, args.epochs, seeds)
        md = markdown(rows, list(rows[0]))
        print(md)
        with open(os.path.join(args.out, "seeds.md"), "w") as f:
            f.write(f"Command: python benchmarks/imagenette_table9.py --epochs {args.epochs} "
                    f"--seeds-table {args.seeds_table}\n\n{md}\n")
        return
    runs = runs_of(args.seed)
    if not args.table_only:
        data_dir = os.path.abspath(args.data_dir)
        while True:  # a row's equal-FLOP baseline joins the plan once the row has run
            todo = pending(runs, args.epochs, probe=not args.no_probe)
            if not todo:
                break
            train(runs, *todo[0], args.epochs, data_dir, args.seed, probe=not args.no_probe)
    rows = table(runs, args.epochs)
    md = markdown(rows, COLUMNS)
    print(md)
    name = f"table_seed{args.seed}"
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(f"Command: python benchmarks/imagenette_table9.py --epochs {args.epochs} "
                f"--seed {args.seed}\n\n{md}\n")
    with open(os.path.join(args.out, f"{name}.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
