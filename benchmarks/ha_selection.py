"""Can Hard Augment's selection work at a given r_sel? Its choice at low resolution against the
choice the same network would make at the step's full resolution. No training: a run's
checkpoints are restored and scored.

    python benchmarks/ha_selection.py --workdir runs/X                    # all kept checkpoints
    python benchmarks/ha_selection.py --workdir runs/X --steps 0,500,2190 --fractions 0.25,0.5,1
    python benchmarks/ha_selection.py --workdir runs/X --init             # also random weights

For each checkpoint (and, with --init, the run's initial weights), --batches batches of
--batch-size training images are drawn as training draws them (whole images kept at the host size
of the run's views, data/canvas.py), n = --views views are rendered at the resolution r (default
the run's r_max) with the run's own view recipe, and every one of the C(n, 2) pairs is scored
with the method's per-sample pair loss, by the networks in training mode as the selection pass
does (hard_augment.select): once on the views at r, and once on the same views downsampled to
each r_sel = round(fraction x r). Per sample and r_sel:
- top-1: whether the pair chosen at r_sel is the hardest at r (chance 1 / C(n, 2): 1/15 at n = 6);
- rank: where the chosen pair falls in the ranking at r (0: the hardest; chance (C(n, 2) - 1) / 2);
- Spearman: the rank correlation of the C(n, 2) pair losses at r_sel and at r.
Means over samples are printed as a table and written to OUT/selection.csv, with a plot
OUT/selection.png (top-1 and Spearman against r_sel / r, one line per checkpoint).

Which pairs to score when the method's two views follow different recipes (BYOL, DINO, MoCo v3;
hard_augment.pairs): view v takes recipe v % 2, so the C(n, 2) pairs include pairs of two views of
one recipe. Beside the all-pairs measures, per sample and r_sel:
- same recipe: whether the all-pairs choice is two views of one recipe (a pair the method's own
  recipe never trains; 6 of the 15 pairs at n = 6);
- cross rank: where the choice among the cross pairs only (one view of each recipe) falls in the
  ranking of all pairs at r, beside `rank`, the all-pairs choice's: what restricting the
  candidates costs in hardness;
- cross top-1: whether the cross choice is the hardest cross pair at r.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis (0: smallest), ties broken by order (losses are continuous)."""
    return np.argsort(np.argsort(x, axis=-1), axis=-1).astype(np.float64)


def agreement(full: np.ndarray, small: np.ndarray) -> dict:
    """Selection quality of pair losses `small` [P, B] against `full` [P, B] (see the module
    docstring): mean top-1, rank of the chosen pair at full resolution, Spearman correlation."""
    chosen = small.argmax(0)
    order_full = np.argsort(-full, axis=0)  # hardest first
    rank = np.argmax(order_full == chosen[None], axis=0)
    rf, rs = _ranks(full.T), _ranks(small.T)
    rf, rs = rf - rf.mean(1, keepdims=True), rs - rs.mean(1, keepdims=True)
    spearman = (rf * rs).sum(1) / np.sqrt((rf ** 2).sum(1) * (rs ** 2).sum(1))
    return {"top1": float((rank == 0).mean()), "rank": float(rank.mean()),
            "spearman": float(np.nanmean(spearman))}


def pairings(full: np.ndarray, small: np.ndarray, num_views: int) -> dict:
    """The all-pairs choice against the cross-pairs choice (see the module docstring) for pair
    losses `full` and `small` [C(n, 2), B] over hard_augment.pair_indices(num_views)."""
    from effssl_jax import hard_augment
    one_of_each = {frozenset(p) for p in zip(*hard_augment.pair_indices(num_views, cross=True))}
    cross = np.array([k for k, p in enumerate(zip(*hard_augment.pair_indices(num_views)))
                      if frozenset(p) in one_of_each])  # their rows among all C(n, 2) pairs
    chosen = small[cross].argmax(0)
    order_full = np.argsort(-full, axis=0)
    rank = np.argmax(order_full == cross[chosen][None], axis=0)
    return {"same_recipe": float(np.isin(small.argmax(0), cross, invert=True).mean()),
            "cross_rank": float(rank.mean()),
            "cross_top1": agreement(full[cross], small[cross])["top1"]}


def _score_fn(exp, num_views: int, resolution: int, sizes):
    """jit(state, images, rng) -> {size: pair losses [P, B]} for the views at `resolution`
    downsampled to each of `sizes` (the full resolution included)."""
    import jax

    from effssl_jax import augment, hard_augment
    from effssl_jax.step import apply_train
    method = exp.method

    def score(state, images, rng):
        views = augment.render_views(rng, images, augment.STANDARD_MAGNITUDE, resolution,
                                     method.view_configs, num_views, exp.dtype)
        online = lambda x: apply_train(method.net, state.params, state.batch_stats, x)[0]
        target = None
        if method.target_net is not None:
            target = lambda x: apply_train(method.target_net, state.target_params,
                                           state.target_batch_stats, x)[0]
        loss = lambda oa, ob, ta, tb: method.pair_loss(oa, ob, ta, tb, state.method_state,
                                                       state.step)
        out = {}
        for size in sizes:
            small = views if size == resolution else hard_augment.downsample(views, size)
            o = jax.vmap(online)(small)
            t = None if target is None else jax.vmap(target)(small)
            out[size] = hard_augment.pair_losses(loss, o, t, num_views)
        return out

    return jax.jit(score)


def measure(workdir: str, steps, fractions, num_views: int, batch_size: int, batches: int,
            resolution: int = 0, init: bool = False):
    """Rows {checkpoint, r, r_sel, fraction, top1, rank, spearman} for `workdir`'s checkpoints."""
    import jax

    from effssl_jax import checkpoint, config_schema, experiment
    from effssl_jax.data import folder, pipeline
    config = config_schema.from_workdir(workdir)
    config.progress_bar = False
    r = resolution or config.progressive.r_max
    exp = experiment.build(config, pipeline.num_train_examples(config))
    sizes = sorted({max(1, round(f * r)) for f in fractions} | {r})
    data = pipeline.load_split(config, "train", folder.WholeImage(exp.host_size(r)),
                               limit=batch_size * batches)
    images = data.whole_images()
    score = _score_fn(exp, num_views, r, sizes)
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, create=False)
    states = [("init", exp.init(jax.random.key(config.seed)))] if init else []
    for step in steps or ckpt.all_steps():
        states.append((str(step), ckpt.restore(exp.abstract_state, int(step))[0]))
    ckpt.close()
    rows = []
    for name, state in states:
        losses = {s: [] for s in sizes}
        for b in range(batches):
            batch = images[b * batch_size:(b + 1) * batch_size]
            for s, v in score(state, batch, jax.random.key(1000 + b)).items():
                losses[s].append(np.asarray(v, np.float64))
        full = np.concatenate(losses[r], 1)
        for s in sizes:
            small = np.concatenate(losses[s], 1)
            rows.append({"checkpoint": name, "r": r, "r_sel": s, "fraction": s / r,
                         **agreement(full, small), **pairings(full, small, num_views)})
    return rows


def plot(rows, path: str, num_pairs: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, group in itertools.groupby(rows, key=lambda row: row["checkpoint"]):
        group = list(group)
        x = [row["fraction"] for row in group]
        axes[0].plot(x, [row["top1"] for row in group], "o-", label=f"checkpoint {name}")
        axes[1].plot(x, [row["spearman"] for row in group], "o-", label=f"checkpoint {name}")
    axes[0].axhline(1 / num_pairs, color="grey", ls="--", label="chance")
    axes[0].set(xlabel="r_sel / r", ylabel="chosen pair = hardest at r", ylim=(0, 1.05))
    axes[1].set(xlabel="r_sel / r", ylabel="Spearman of pair losses vs r", ylim=(-0.1, 1.05))
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Hard Augment's selection at r_sel against r = {rows[0]['r']} px")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", default="", help="checkpoint steps (default: all kept)")
    p.add_argument("--init", action="store_true", help="also the run's initial weights")
    p.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    p.add_argument("--resolution", type=int, default=0, help="r (default: the run's r_max)")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--out", default="", help="folder for selection.csv and .png")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s]
    rows = measure(args.workdir, steps, [float(f) for f in args.fractions.split(",")], args.views,
                   args.batch_size, args.batches, args.resolution, args.init)
    pairs = args.views * (args.views - 1) // 2
    print(f"{args.workdir}: {args.views} views ({pairs} pairs; chance top-1 {1 / pairs:.3f}, "
          f"chance rank {(pairs - 1) / 2:.1f}), {args.batches} x {args.batch_size} images")
    print("| checkpoint | r | r_sel | r_sel / r | top-1 | rank at r | Spearman | same recipe | "
          "cross rank at r | cross top-1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['checkpoint']} | {row['r']} | {row['r_sel']} | {row['fraction']:.3f} | "
              f"{row['top1']:.3f} | {row['rank']:.2f} | {row['spearman']:.3f} | "
              f"{row['same_recipe']:.3f} | {row['cross_rank']:.2f} | {row['cross_top1']:.3f} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "selection.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, os.path.join(args.out, "selection.png"), pairs)


if __name__ == "__main__":
    main()
