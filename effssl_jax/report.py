"""Tables and figures like the paper's, from the workdirs of finished (or running) runs.

    python -m effssl_jax.report RUN_DIR [RUN_DIR ...] --out report/ [--baseline RUN_DIR]

writes into --out:
  results.md, results.csv    one row per run: method, lr schedule, SP, HA, epochs, kNN top-1
                             (online, last evaluation), the columns of every registered evaluator
                             (evaluate/registry.py: offline kNN, linear probe, SimSiam's linear
                             protocol; from the latest eval.json record that has its result, if
                             `python -m effssl_jax.evaluate` was run),
                             training PFLOPs in XLA's and the paper's conventions (costs.py),
                             speed-ups vs the baseline (ratios within each convention, and of
                             training time), wall-clock, training images/s
  fig2_lr_momentum.png       learning rate and SGD momentum (AdamW: beta1) vs step (Fig. 2)
  fig3_resolution_magnitude.png  training resolution and augmentation magnitude vs epoch (Fig. 3)
  knn_vs_cost.png            kNN top-1 vs training PFLOPs and vs training time, all runs

The baseline is `--baseline`, else the run with a cosine lr schedule and the most epochs (else
the first run given). Reads config.json, summary.json, metrics.jsonl and eval.json only.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from absl import flags  # noqa: E402
from matplotlib import cycler  # noqa: E402

from effssl_jax import cli, run_log, storage  # noqa: E402
from effssl_jax.errors import UserError  # noqa: E402
from effssl_jax.evaluate import registry  # noqa: E402

_BASELINE = flags.DEFINE_string("baseline", None, "Run folder of the baseline (default: the "
                                "cosine run with the most epochs).")

SP_LABELS = {"fixed": "-", "progressive": "P", "super_progressive": "SP"}
# Ten colours solid, then dashed, then dotted: runs past the tenth keep their own line.
RUN_STYLES = cycler(linestyle=["-", "--", ":"]) * cycler(color=plt.get_cmap("tab10").colors)


@dataclasses.dataclass
class Run:
    workdir: str
    label: str
    config: dict
    summary: dict
    metrics: list
    evals: list

    @property
    def train_rows(self) -> list:
        return [m for m in self.metrics if "loss" in m]

    @property
    def knn_rows(self) -> list:
        return [m for m in self.metrics if "knn_top1" in m]


def _read_json(path, default=None):
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return default


def load_run(workdir: str) -> Run:
    config = _read_json(storage.join(workdir, "config.json"))
    if config is None:
        raise UserError(f"{workdir}/config.json not found: not a run directory (give the folders "
                        "that launch.py trained into)")
    summary = _read_json(storage.join(workdir, "summary.json"), {})
    return Run(workdir, storage.basename(workdir), config, summary, run_log.read_metrics(workdir),
               _read_json(storage.join(workdir, "eval.json"), []))


def pick_baseline(runs: list[Run], baseline: str | None = None) -> Run:
    if baseline:
        for run in runs:
            if storage.absolute(run.workdir) == storage.absolute(baseline):
                return run
        return load_run(baseline)
    cosine = [r for r in runs if r.config["optim"]["schedule"] == "cosine"]
    return max(cosine, key=lambda r: r.config["epochs"]) if cosine else runs[0]


def _latest(run: Run, key: str):
    records = [r for r in run.evals if key in r]
    return records[-1] if records else None


def _cumulative_cost(run: Run) -> list[tuple[float, float, float]]:
    """(kNN top-1, training PFLOPs so far, training seconds so far) at each evaluation. Eval lines
    written by the current train loop carry pflops and train_time_s; for older runs both are
    rebuilt from the logged steps (resolution -> the summary's GFLOPs per step; batch /
    images/s)."""
    rows = run.knn_rows
    if rows and all("pflops" in r and "train_time_s" in r for r in rows):
        return [(r["knn_top1"], r["pflops"], r["train_time_s"]) for r in rows]
    gflops = run.summary.get("gflops_per_step", {})
    batch = run.config["batch_size"]
    flops = seconds = 0.0
    prev = 0
    by_step = {}
    for m in run.train_rows:
        n = m["step"] - prev
        flops += n * gflops.get(str(m["resolution"]), 0.0) / 1e6
        seconds += n * batch / max(m["images_per_sec"], 1e-9)
        prev = m["step"]
        by_step[m["step"]] = (flops, seconds)
    out = []
    for r in rows:
        done = [s for s in by_step if s <= r["step"]]
        f, s = by_step[max(done)] if done else (0.0, 0.0)
        out.append((r["knn_top1"], f, s))
    return out


def _pct(x):
    return "" if x is None else f"{100 * x:.2f}"


def _evaluator_cells(run: Run) -> dict[str, str]:
    """Each registered evaluator's columns from the run's latest eval.json record of it."""
    cells = {}
    for name, cls in registry.EVALUATORS.items():
        latest = _latest(run, name)
        values = cls.cells(latest[name], run.config) if latest else {}
        cells.update({key: _pct(values.get(key)) for key, _ in cls.columns})
    return cells


def table_rows(runs: list[Run], baseline: Run) -> list[dict]:
    base = baseline.summary
    rows = []
    for run in runs:
        s, c = run.summary, run.config
        pflops, paper = s.get("total_pflops"), s.get("pflops_paper")
        train_s = s.get("train_time_s")
        steps = s.get("steps") or (run.train_rows[-1]["step"] if run.train_rows else 0)
        knn = s.get("knn_top1", run.knn_rows[-1]["knn_top1"] if run.knn_rows else None)
        rows.append({
            "run": run.label,
            "method": c["method"],
            "lr_schedule": c["optim"]["schedule"],
            "SP": SP_LABELS.get(c["progressive"]["schedule"], c["progressive"]["schedule"]),
            "HA": "yes" if c["hard_augment"]["enabled"] else "-",
            "epochs": round(s["epochs"] if "epochs" in s else
                            (run.train_rows[-1]["epoch"] if run.train_rows else 0.0), 2),
            "knn_top1_%": _pct(knn),
            **_evaluator_cells(run),
            "pflops": f"{pflops:.4g}" if pflops else "",
            "speedup_flops": (f"{base['total_pflops'] / pflops:.2f}"
                              if pflops and base.get("total_pflops") else ""),
            "pflops_paper": f"{paper:.4g}" if paper else "",
            "speedup_flops_paper": (f"{base['pflops_paper'] / paper:.2f}"
                                    if paper and base.get("pflops_paper") else ""),
            "speedup_time": (f"{base['train_time_s'] / train_s:.2f}"
                             if train_s and base.get("train_time_s") else ""),
            "wall_clock_s": s.get("wall_clock_s", ""),
            "train_time_s": train_s if train_s is not None else "",
            "images_per_s": (f"{steps * c['batch_size'] / train_s:.0f}" if train_s else ""),
            "finished": "yes" if s else "running",
        })
    return rows


def columns() -> list[tuple[str, str]]:
    """(key, markdown header) of the table: the run's, then each registered evaluator's, then
    the costs."""
    evaluators = [col for cls in registry.EVALUATORS.values() for col in cls.columns]
    return [
        ("run", "run"), ("method", "method"), ("lr_schedule", "LR schedule"), ("SP", "SP"),
        ("HA", "HA"), ("epochs", "epochs"), ("knn_top1_%", "kNN top-1 (%)"), *evaluators,
        ("pflops", "PFLOPs"), ("speedup_flops", "speed-up (FLOPs)"),
        ("pflops_paper", "PFLOPs (paper)"), ("speedup_flops_paper", "speed-up (paper FLOPs)"),
        ("speedup_time", "speed-up (time)"), ("wall_clock_s", "wall-clock (s)"),
        ("train_time_s", "train time (s)"), ("images_per_s", "images/s"),
        ("finished", "finished"),
    ]


def write_tables(rows: list[dict], baseline: Run, out: str) -> None:
    cols = columns()
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[k for k, _ in cols])
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(storage.join(out, "results.csv"), table.getvalue())
    lines = ["# Results", "",
             f"Baseline for the speed-ups: `{baseline.label}` ({baseline.workdir}). "
             "kNN top-1: the train loop's last online evaluation (weighted kNN, the config's k "
             "and T); kNN offline, linear and the other evaluators' columns: the latest `python "
             "-m effssl_jax.evaluate` record of each in eval.json. PFLOPs: training steps (Hard "
             "Augment selection included), from XLA's cost analysis. Speed-up: the baseline's "
             "PFLOPs (training time) over the run's. "
             "Train time excludes compilation, evaluation and checkpoints; images/s = "
             "steps x batch / train time.", "",
             "| " + " | ".join(h for _, h in cols) + " |",
             "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[k]) for k, _ in cols) + " |")
    lines += ["", "![Fig. 2](fig2_lr_momentum.png)", "",
              "![Fig. 3](fig3_resolution_magnitude.png)", "", "![kNN vs cost](knn_vs_cost.png)", ""]
    storage.write_text(storage.join(out, "results.md"), "\n".join(lines))


def _style(ax, xlabel, ylabel, title=None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _series(rows, x, y):
    rows = [r for r in rows if x in r and y in r]
    return [r[x] for r in rows], [r[y] for r in rows]


def _save(fig, path: str) -> None:
    with storage.open_for_writing(path) as f:
        fig.savefig(f, format="png", dpi=120)


def _subplots(*args, **kwargs):
    """plt.subplots whose axes draw successive runs in RUN_STYLES."""
    fig, axes = plt.subplots(*args, **kwargs)
    for ax in axes.flat:
        ax.set_prop_cycle(RUN_STYLES)
    return fig, axes


def momentum_name(runs: list[Run]) -> str:
    """What the logged `momentum` is: SGD's momentum, or AdamW's beta1 (optim.py)."""
    optimizers = {r.config.get("optim", {}).get("optimizer", "sgd") for r in runs}
    return {frozenset({"sgd"}): "SGD momentum", frozenset({"adamw"}): "AdamW beta1"}.get(
        frozenset(optimizers), "momentum (SGD) / beta1 (AdamW)")


def plot_lr_momentum(runs: list[Run], path: str) -> None:
    fig, (ax_lr, ax_m) = _subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for run in runs:
        ax_lr.plot(*_series(run.train_rows, "step", "lr"), label=run.label)
        ax_m.plot(*_series(run.train_rows, "step", "momentum"), label=run.label)
    name = momentum_name(runs)
    _style(ax_lr, "", "learning rate", f"Learning rate and {name} per step (cf. Fig. 2)")
    _style(ax_m, "training step (iteration)", name)
    ax_lr.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_resolution_magnitude(runs: list[Run], path: str) -> None:
    fig, (ax_r, ax_m) = _subplots(2, 1, figsize=(8, 6.5), sharex=True)
    for run in runs:
        ax_r.step(*_series(run.train_rows, "epoch", "resolution"), where="post", label=run.label)
        ax_m.plot(*_series(run.train_rows, "epoch", "magnitude"), label=run.label)
    _style(ax_r, "", "training resolution (px)",
           "Resolution and augmentation magnitude per epoch (cf. Fig. 3)")
    _style(ax_m, "epoch", "augmentation magnitude\n(colour-jitter strength, 5 = SimCLR)")
    ax_r.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_knn_vs_cost(runs: list[Run], path: str) -> None:
    fig, (ax_f, ax_t) = _subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for run in runs:
        points = _cumulative_cost(run)
        if not points:
            continue
        acc = [100 * p[0] for p in points]
        line, = ax_f.plot([p[1] for p in points], acc, marker="o", ms=4, label=run.label)
        ax_t.plot([p[2] for p in points], acc, marker="o", ms=4, color=line.get_color(),
                  linestyle=line.get_linestyle(), label=run.label)
    _style(ax_f, "training compute (PFLOPs)", "kNN top-1 accuracy (%)", "kNN accuracy vs compute")
    _style(ax_t, "training time (s; excl. compile, eval, checkpoints)", "",
           "kNN accuracy vs training time")
    ax_f.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def build_report(run_dirs: list[str], out: str, baseline: str | None = None) -> list[dict]:
    runs = [load_run(d) for d in run_dirs]
    base = pick_baseline(runs, baseline)
    storage.makedirs(out)
    rows = table_rows(runs, base)
    write_tables(rows, base, out)
    plot_lr_momentum(runs, storage.join(out, "fig2_lr_momentum.png"))
    plot_resolution_magnitude(runs, storage.join(out, "fig3_resolution_magnitude.png"))
    plot_knn_vs_cost(runs, storage.join(out, "knn_vs_cost.png"))
    return rows


def _command(run_dirs: list[str]) -> list[dict]:
    """The command on the parsed flags and the run folders."""
    if not run_dirs:
        raise UserError("give the run folders: python -m effssl_jax.report RUN_DIR [RUN_DIR ...]")
    out = cli.OUT.value or "report"
    rows = build_report(run_dirs, out, _BASELINE.value)
    print(storage.read_text(storage.join(out, "results.md")).split("\n\n![")[0])
    print(f"\nwrote {out}/results.md, results.csv, fig2_lr_momentum.png, "
          "fig3_resolution_magnitude.png, knn_vs_cost.png")
    return rows


def main(argv: list[str]) -> list[dict]:
    """The command from Python: main([RUN_DIR, ..., "--out", DIR])."""
    return _command(cli.parse(["effssl-report", *argv]))


def console_main():
    cli.run_app(_command, __name__, (cli.OUT,))


if __name__ == "__main__":
    console_main()
