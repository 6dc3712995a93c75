"""Linear probe on frozen features: multinomial logistic regression on standardised features, the
L2 penalty chosen on a held-out part of the train split, then refitted on the whole train split;
fitted by full-batch L-BFGS (optax.lbfgs with its zoom line search: exact, but all features on one
device) or by minibatch SGD (`optimizer="sgd"`: the features stay on the host and each step puts
one minibatch on the devices, so memory is bounded at any dataset size). `LinearProbe` is the
`linear` protocol of the evaluate command."""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax.evaluate.base import Evaluator, Inputs
from effssl_jax.evaluate.knn import topk_accuracy

LINEAR_PROBE_DEFAULTS = dict(l2_grid=(1e-2, 1e-3, 1e-4, 1e-5, 0.0), val_fraction=0.2,
                             max_iter=1000, tol=1e-5, memory_size=10, seed=0, optimizer="lbfgs",
                             batch_size=256, epochs=30, lr=0.1, momentum=0.9)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iter", "memory_size"))
def fit_logistic_regression(x, y, l2, num_classes: int, max_iter: int = 1000, tol: float = 1e-5,
                            memory_size: int = 10):
    """argmin_{W,b} mean softmax cross-entropy(x W + b, y) + l2/2 ||W||^2 by L-BFGS, stopping at
    max_iter iterations or when the gradient norm falls below tol. Returns (params, iterations,
    final objective); l2 is traced, so a sweep over l2 compiles once per data shape."""
    objective = functools.partial(_objective, x=x, y=y, l2=l2)
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


def _objective(params, x, y, l2):
    """Mean softmax cross-entropy of x W + b, plus l2/2 ||W||^2."""
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)


def _sgd_step(mesh, tx):
    """jit(params, opt_state, x [B, D] and y [B] sharded over `data`, l2) -> one SGD step."""
    def step(params, opt_state, x, y, l2):
        grads = jax.grad(_objective)(params, x, y, l2)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(step, in_shardings=(replicated, replicated, batch, batch, None),
                   out_shardings=(replicated, replicated), donate_argnums=(0, 1))


def fit_logistic_regression_sgd(x, y, l2, num_classes: int, batch_size: int = 256,
                                epochs: int = 30, lr: float = 0.1, momentum: float = 0.9,
                                seed: int = 0, mesh=None):
    """The same objective as fit_logistic_regression by minibatch SGD (momentum, cosine lr,
    reshuffled every epoch, the last incomplete batch dropped): x stays on the host (numpy) and
    one minibatch at a time is sharded over the devices of `mesh` (default: this host's).
    Returns (params, steps, final objective on x)."""
    mesh = mesh or Mesh(np.array(jax.local_devices()), ("data",))
    batch_size = max(min(batch_size, len(x)) // mesh.size, 1) * mesh.size
    steps_per_epoch = max(len(x) // batch_size, 1)
    total = epochs * steps_per_epoch
    tx = optax.sgd(optax.cosine_decay_schedule(lr, total), momentum=momentum)
    step = _sgd_step(mesh, tx)
    params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
              "b": jnp.zeros((num_classes,), jnp.float32)}
    opt_state = tx.init(params)
    batch = NamedSharding(mesh, P("data"))
    put = lambda a: jax.make_array_from_callback(a.shape, batch, lambda i: a[i])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            params, opt_state = step(params, opt_state, put(x[idx]), put(y[idx]), np.float32(l2))
            # One step in flight: XLA:CPU's simulated devices can deadlock in the all-reduce
            # when many collective steps are queued; the step is tiny next to its batch's upload.
            jax.block_until_ready(params)
    return jax.device_get(params), total, float(_objective(params, x, y, l2))


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
    if o["optimizer"] == "sgd":
        fit = functools.partial(fit_logistic_regression_sgd, num_classes=num_classes,
                                batch_size=o["batch_size"], epochs=o["epochs"], lr=o["lr"],
                                momentum=o["momentum"], seed=o["seed"])
        optimizer = {"optimizer": f"minibatch SGD (momentum {o['momentum']:g}, batch "
                                  f"{o['batch_size']}, lr {o['lr']:g} cosine to 0, "
                                  f"{o['epochs']} epochs), zero init",
                     "batch_size": o["batch_size"], "epochs": o["epochs"], "lr": o["lr"],
                     "momentum": o["momentum"]}
    elif o["optimizer"] == "lbfgs":
        fit = functools.partial(fit_logistic_regression, num_classes=num_classes,
                                max_iter=o["max_iter"], tol=o["tol"],
                                memory_size=o["memory_size"])
        optimizer = {"optimizer": "full-batch L-BFGS (optax.lbfgs, zoom line search), zero init",
                     "max_iter": o["max_iter"], "tol_grad_norm": o["tol"],
                     "memory_size": o["memory_size"]}
    else:
        raise ValueError(f"optimizer={o['optimizer']!r} is unknown; valid: lbfgs, sgd")

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
            **optimizer, "l2_grid": grid,
            "l2_selection": f"best top-1 on a held-out {o['val_fraction']:g} of the train split "
                            f"(seed {o['seed']}), then refit on the whole train split",
            "val_top1_by_l2": {str(k): v for k, v in val_top1.items()},
            "l2": l2, "iterations": int(iterations), "final_objective": float(objective),
            "fit_s": round(fit_s, 3),
        },
    }


class LinearProbe(Evaluator):
    """linear_probe() of the eval split's features, trained on the bank's; `options` are
    LINEAR_PROBE_DEFAULTS (e.g. optimizer='sgd')."""
    name = "linear"
    options = LINEAR_PROBE_DEFAULTS
    columns = (("linear_top1_%", "linear top-1 (%)"), ("linear_top5_%", "linear top-5 (%)"))

    def run(self, inputs: Inputs) -> dict:
        bank, queries = inputs.features()
        return linear_probe(bank.features, bank.labels, queries.features, queries.labels,
                            bank.num_classes, **self.settings)

    @classmethod
    def describe(cls, result) -> str:
        p = result["protocol"]
        return (f"linear probe ({p['optimizer'].split(' (')[0]}, l2={p['l2']:g}, "
                f"{p['iterations']} iterations): top-1 {100 * result['top1']:.2f}%, "
                f"top-5 {100 * result['top5']:.2f}%")

    @classmethod
    def cells(cls, result, config) -> dict[str, float]:
        return {"linear_top1_%": result["top1"], "linear_top5_%": result["top5"]}
