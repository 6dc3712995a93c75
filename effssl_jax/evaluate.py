"""Evaluation on frozen backbone features: weighted kNN (Wu et al. 2018) and a linear probe.

One kNN implementation serves the online kNN of the train loop and the offline evaluation of a
workdir's checkpoint:

    python -m effssl_jax.evaluate --workdir DIR [--protocol knn|linear|all] [--step N]

extracts centre-cropped backbone features of the labelled bank split (kNN memory bank / probe
training set: the train split, or STL-10's labelled train split)
and the eval split once, runs the requested protocols and appends one record to DIR/eval.json.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from effssl_jax import augment

# solo-learn's kNN setting, reported next to the configured one.
SOLO_LEARN_KNN = (20, 0.07)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_scores(train_features, train_labels, query, k: int, temperature: float, num_classes: int):
    sim = query @ train_features.T  # cosine similarity of L2-normalised features
    top_sim, top_idx = jax.lax.top_k(sim, k)
    weights = jnp.exp(top_sim / temperature)
    votes = jax.nn.one_hot(train_labels[top_idx], num_classes) * weights[..., None]
    return votes.sum(axis=1)  # [Q, num_classes]


def knn_classify(train_features, train_labels, query_features, k: int = 200,
                 temperature: float = 0.1, num_classes: int | None = None,
                 chunk: int = 1024) -> np.ndarray:
    """Class scores of each query from its k most cosine-similar training features, each vote
    weighted by exp(similarity / temperature). Features must be L2-normalised. Returns [Q, C]."""
    train_labels = np.asarray(train_labels)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_labels))
    tf, tl = jnp.asarray(train_features), jnp.asarray(train_labels)
    out = [np.asarray(_knn_scores(tf, tl, jnp.asarray(query_features[i:i + chunk]), k,
                                  temperature, num_classes))
           for i in range(0, len(query_features), chunk)]
    return np.concatenate(out)


def topk_accuracy(scores, labels, ks=(1, 5)) -> dict[str, float]:
    """{'top1': ..., 'top5': ...}: fraction of rows whose label is among the k highest scores
    (ties broken by class index, as argsort; k is capped at the number of classes)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return {f"top{k}": float(np.mean((order[:, :min(k, scores.shape[1])] == labels[:, None])
                                     .any(-1))) for k in ks}


def knn_accuracy(train_features, train_labels, query_features, query_labels, **kw) -> float:
    scores = knn_classify(train_features, train_labels, query_features, **kw)
    return topk_accuracy(scores, query_labels, ks=(1,))["top1"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def make_feature_fn(net, mesh, resolution: int, crop_fraction: float, dtype, normalize=True):
    """jitted (variables, uint8 images [B,H,W,3]) -> backbone features [B, D] of the centre crop
    (L2-normalised unless normalize=False), batch sharded over the mesh's data axis."""
    def features(variables, images):
        x = augment.normalize(augment.center_resize(images, resolution, crop_fraction))
        f = net.apply(variables, x.astype(dtype), method=net.features).astype(jnp.float32)
        if not normalize:
            return f
        return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)

    return jax.jit(features, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))),
                   out_shardings=NamedSharding(mesh, P()))


def extract_features(feature_fn, variables, images: np.ndarray, batch_size: int, mesh) -> np.ndarray:
    """Features of all images; the last batch is padded to a multiple of the device count."""
    num_devices = mesh.devices.size
    batch_size = max(batch_size // num_devices, 1) * num_devices
    sharding = NamedSharding(mesh, P("data"))
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        # Every host holds all images; each device takes its slice (works across hosts too).
        batch = jax.make_array_from_callback(chunk.shape, sharding, lambda index: chunk[index])
        out.append(np.asarray(feature_fn(variables, batch))[:batch_size - pad])
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Linear probe: multinomial logistic regression on standardised frozen features, full-batch
# L-BFGS (optax.lbfgs with its zoom line search), L2 penalty chosen on a held-out part of the
# train split, then refitted on the whole train split.
# ---------------------------------------------------------------------------------------------

LINEAR_PROBE_DEFAULTS = dict(l2_grid=(1e-2, 1e-3, 1e-4, 1e-5, 0.0), val_fraction=0.2,
                             max_iter=1000, tol=1e-5, memory_size=10, seed=0)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter", "memory_size"))
def fit_logistic_regression(x, y, l2, num_classes: int, max_iter: int = 1000, tol: float = 1e-5,
                            memory_size: int = 10):
    """argmin_{W,b} mean softmax cross-entropy(x W + b, y) + l2/2 ||W||^2 by L-BFGS, stopping at
    max_iter iterations or when the gradient norm falls below tol. Returns (params, iterations,
    final objective); l2 is traced, so a sweep over l2 compiles once per data shape."""
    def objective(params):
        logits = x @ params["w"] + params["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                    value_fn=objective)
        return optax.apply_updates(params, updates), state

    def running(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
        return (count == 0) | ((count < max_iter) & (grad_norm >= tol))

    params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
              "b": jnp.zeros((num_classes,), jnp.float32)}
    params, state = jax.lax.while_loop(running, step, (params, opt.init(params)))
    return params, optax.tree_utils.tree_get(state, "count"), objective(params)


def linear_probe(train_x, train_y, eval_x, eval_y, num_classes: int | None = None,
                 **options) -> dict:
    """Top-1/top-5 eval accuracy of a linear classifier on frozen features, with the protocol
    and its hyper-parameters (options override LINEAR_PROBE_DEFAULTS)."""
    o = {**LINEAR_PROBE_DEFAULTS, **options}
    train_x, eval_x = np.asarray(train_x, np.float32), np.asarray(eval_x, np.float32)
    train_y, eval_y = np.asarray(train_y, np.int32), np.asarray(eval_y, np.int32)
    num_classes = num_classes or int(max(train_y.max(), eval_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 1e-6, std, 1.0)  # constant (e.g. dead) features stay 0
    train_x, eval_x = (train_x - mean) / std, (eval_x - mean) / std
    fit = functools.partial(fit_logistic_regression, num_classes=num_classes,
                            max_iter=o["max_iter"], tol=o["tol"], memory_size=o["memory_size"])

    grid = [float(v) for v in o["l2_grid"]]
    val_top1 = {}
    n_val = int(round(o["val_fraction"] * len(train_x)))
    if len(grid) > 1 and 0 < n_val < len(train_x):
        order = np.random.default_rng(o["seed"]).permutation(len(train_x))
        val, fit_idx = order[:n_val], order[n_val:]
        for l2 in grid:
            params, _, _ = fit(train_x[fit_idx], train_y[fit_idx], l2)
            scores = train_x[val] @ np.asarray(params["w"]) + np.asarray(params["b"])
            val_top1[l2] = topk_accuracy(scores, train_y[val], ks=(1,))["top1"]
        l2 = max(grid, key=lambda v: val_top1[v])  # ties: the first (strongest penalty) wins
    else:
        l2 = grid[0]
    t0 = time.perf_counter()
    params, iterations, objective = fit(train_x, train_y, l2)
    fit_s = time.perf_counter() - t0
    scores = eval_x @ np.asarray(params["w"]) + np.asarray(params["b"])
    train_acc = topk_accuracy(train_x @ np.asarray(params["w"]) + np.asarray(params["b"]),
                              train_y, ks=(1,))["top1"]
    return {
        **topk_accuracy(scores, eval_y), "train_top1": train_acc,
        "protocol": {
            "classifier": "multinomial logistic regression (linear layer + softmax CE) on frozen "
                          "backbone features, standardised with the train split's mean and std",
            "optimizer": "full-batch L-BFGS (optax.lbfgs, zoom line search), zero init",
            "max_iter": o["max_iter"], "tol_grad_norm": o["tol"], "memory_size": o["memory_size"],
            "l2_grid": grid, "l2_selection": f"best top-1 on a held-out {o['val_fraction']:g} of "
                                              f"the train split (seed {o['seed']}), then refit "
                                              "on the whole train split",
            "val_top1_by_l2": {str(k): v for k, v in val_top1.items()},
            "l2": l2, "iterations": int(iterations), "final_objective": float(objective),
            "fit_s": round(fit_s, 3),
        },
    }


# ---------------------------------------------------------------------------------------------
# Offline evaluation of a workdir's checkpoint.
# ---------------------------------------------------------------------------------------------

def restore_variables(workdir: str, step: int | None = None, train_size: int | None = None):
    """(config, method, {'params', 'batch_stats'}, checkpoint step, mesh, dtype) of WORKDIR's
    checkpoint `step` (default: the latest), restored with the train loop's abstract state."""
    from effssl_jax import checkpoint, train  # train imports this module
    from effssl_jax.train_step import data_mesh

    config = train.load_config(workdir)
    mesh = data_mesh()
    dtype = train.compute_dtype(config.dtype)
    # The state's shapes do not depend on the dataset size (it only sets the schedules).
    _, method, _, _, abstract = train.build_state(config, mesh, dtype,
                                                  train_size or config.batch_size)
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    if ckpt.latest_step is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt.directory}; train the run first "
                                "(checkpoints are written every --config.checkpoint_every_steps)")
    state, _ = ckpt.restore(abstract, step)
    ckpt.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return config, method, variables, int(state.step), mesh, dtype


def append_eval_record(workdir: str, record: dict) -> None:
    path = os.path.join(workdir, "eval.json")
    records = []
    if os.path.exists(path):
        with open(path) as f:
            records = json.load(f)
    records.append(record)
    with open(path + ".tmp", "w") as f:
        json.dump(records, f, indent=2)
    os.replace(path + ".tmp", path)


def read_eval_records(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "eval.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def evaluate_workdir(workdir: str, protocols=("knn", "linear"), step: int | None = None,
                     knn_settings=None, probe_options=None, write: bool = True) -> dict:
    """Evaluates WORKDIR's checkpoint with the given protocols; appends the record to
    WORKDIR/eval.json (write=True) and returns it. knn_settings: [(k, temperature), ...]
    (default: the config's, then solo-learn's k=20, T=0.07)."""
    from effssl_jax import train
    from effssl_jax.data import datasets, pipeline

    config = train.load_config(workdir)
    eval_res, image_size = train.sizes(config)
    bank_split = datasets.info_for(config.dataset).bank_split
    train_ds = pipeline.load_split(config, "bank", image_size)
    eval_ds = pipeline.load_split(config, "eval", image_size)
    num_pretrain = pipeline.pretrain_size(config)
    config, method, variables, ckpt_step, mesh, dtype = restore_variables(
        workdir, step, num_pretrain)
    fn = make_feature_fn(method.net, mesh, eval_res, config.eval.crop_fraction, dtype,
                         normalize=False)
    t0 = time.perf_counter()
    train_x, eval_x = (extract_features(fn, variables, d.images, config.eval.batch_size, mesh)
                       for d in (train_ds, eval_ds))
    steps_per_epoch = num_pretrain // config.batch_size
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_step": ckpt_step, "epoch": ckpt_step / max(steps_per_epoch, 1),
        "dataset": config.dataset, "num_train": len(train_ds), "num_eval": len(eval_ds),
        "num_classes": train_ds.num_classes, "feature_dim": int(train_x.shape[1]),
        "features": f"backbone, eval-mode BN, centre crop {config.eval.crop_fraction:g} of the "
                    f"short side resized to {eval_res} px",
        "feature_s": round(time.perf_counter() - t0, 2),
    }
    if "knn" in protocols:
        settings = knn_settings or list(dict.fromkeys(
            [(config.eval.knn_k, config.eval.knn_temperature), SOLO_LEARN_KNN]))
        bank, queries = l2_normalize(train_x), l2_normalize(eval_x)
        record["knn"] = []
        for k, temperature in settings:
            scores = knn_classify(bank, train_ds.labels, queries, k=k, temperature=temperature,
                                  num_classes=train_ds.num_classes)
            record["knn"].append({"k": k, "temperature": temperature, "weighting": "exp(cos/T)",
                                  "memory_bank": f"{bank_split} split",
                                  **topk_accuracy(scores, eval_ds.labels)})
    if "linear" in protocols:
        record["linear"] = linear_probe(train_x, train_ds.labels, eval_x, eval_ds.labels,
                                        train_ds.num_classes, **(probe_options or {}))
    if write and jax.process_index() == 0:
        append_eval_record(workdir, record)
    return record


def describe(record: dict) -> str:
    lines = [f"checkpoint step {record['checkpoint_step']} (epoch {record['epoch']:g}), "
             f"{record['num_train']} train / {record['num_eval']} eval images"]
    for r in record.get("knn", []):
        lines.append(f"kNN k={r['k']} T={r['temperature']:g}: top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    if "linear" in record:
        r = record["linear"]
        lines.append(f"linear probe (L-BFGS, l2={r['protocol']['l2']:g}, "
                     f"{r['protocol']['iterations']} iterations): top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m effssl_jax.evaluate",
        description="kNN and linear-probe accuracy of a run's checkpoint; appends to "
                    "WORKDIR/eval.json")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--protocol", choices=("knn", "linear", "all"), default="all")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--knn", action="append", default=None, metavar="K,T",
                        help="kNN setting, repeatable (default: the config's and 20,0.07)")
    args = parser.parse_args(argv)
    protocols = ("knn", "linear") if args.protocol == "all" else (args.protocol,)
    knn = [(int(s.split(",")[0]), float(s.split(",")[1])) for s in args.knn] if args.knn else None
    record = evaluate_workdir(args.workdir, protocols, args.step, knn)
    print(describe(record), flush=True)
    print(f"appended to {os.path.join(args.workdir, 'eval.json')}", flush=True)
    return record


if __name__ == "__main__":
    main()
