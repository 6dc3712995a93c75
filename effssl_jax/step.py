"""The train state and the train step: augment on the device, (select the hardest pair), forward
both views (and any local crops: multicrop.py), the method's loss, SGD update, target EMA update.

The step is a pure function of (state, whole images in a canvas, magnitude); everything static
about it (the resolution, the number of views, the canvas side, the local crops' count and side)
is a `StepSpec`, so each resolution bucket is one compiled step (compile.py jits it over a device
mesh with the batch on the `data` axis).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from effssl_jax import augment, hard_augment, multicrop


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    target_params: Any  # {} for methods without a target network
    target_batch_stats: Any
    method_state: Any
    rng: jax.Array


def create_state(method, tx, rng, resolution: int, param_dtype=jnp.float32) -> TrainState:
    """The initial state; its parameters and BN statistics are cast to `param_dtype`."""
    init_rng, rng = jax.random.split(rng)
    x = jnp.zeros((2, resolution, resolution, 3), jnp.float32)
    variables = jax.tree.map(lambda v: v.astype(param_dtype),
                             method.net.init(init_rng, x, train=False))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    target_params, target_batch_stats = {}, {}
    if method.target_net is not None:
        # The target starts as a copy of the online network's matching sub-trees.
        shapes = jax.eval_shape(lambda: method.target_net.init(init_rng, x, train=False))
        target_params = {k: params[k] for k in shapes["params"]}
        target_batch_stats = {k: batch_stats[k] for k in shapes.get("batch_stats", {})}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), target_params=target_params,
                      target_batch_stats=target_batch_stats, method_state=method.init_state(),
                      rng=rng)


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """Everything that is static in a compiled step: one compile per distinct StepSpec."""
    resolution: int
    num_views: int
    r_sel: int
    canvas: int  # the side of the host's canvas of whole images (data/canvas.py)
    local_batch: int
    extra_targets: bool = False  # Table 9: unselected low-res views as extra targets
    skip_nonfinite: bool = False  # optim.on_nonfinite='skip': an unhealthy update is dropped
    max_update_ratio: float = 100.0  # an update larger than this x the weights is divergence
    # Multi-crop's local crops at this bucket (count, side, augmentation), or None (multicrop.py)
    local_crops: multicrop.LocalCrops | None = None
    cross_pairs: bool = False  # Hard Augment scores one view of each recipe per pair


def apply_train(net, params, batch_stats, x):
    """Forward in training mode (batch statistics of this batch): (outputs, new batch_stats)."""
    out, updates = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"])
    return out, updates["batch_stats"]


def all_finite(tree) -> jax.Array:
    """True when every floating-point leaf of `tree` is finite (no NaN or Inf)."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def is_healthy(tree, grad_norm, param_norm, update_ratio, max_update_ratio: float) -> jax.Array:
    """Whether a step may go on (and its state reach a checkpoint): the loss, gradients and new
    state `tree` are finite, their norms too (they overflow float32 before the leaves do), and the
    update is at most `max_update_ratio` x the weights: a larger one is an explosion, not learning,
    and the finite but huge states that follow it overflow at any lr (docs/reliability.md)."""
    return (all_finite((tree, grad_norm, param_norm, update_ratio))
            & (update_ratio <= max_update_ratio))


def _target_outputs(method, state, views):
    """Target outputs for a stack of views [k, B, ...] (no gradient), and its BN stats."""
    if method.target_net is None:
        return None, state.target_batch_stats
    stats = state.target_batch_stats
    outs = []
    for v in range(views.shape[0]):
        out, stats = apply_train(method.target_net, state.target_params, stats, views[v])
        outs.append(out)
    outs = jax.tree.map(lambda *x: jnp.stack(x), *outs)
    return jax.lax.stop_gradient(outs), stats


def _scoring_nets(method, state):
    """(online, target) functions of a view batch -> outputs with this state's networks in
    training mode, their BN updates dropped (target None without a target network): how Hard
    Augment's selection and the local crops' extra targets see views they do not train on."""
    online = lambda x: apply_train(method.net, state.params, state.batch_stats, x)[0]
    target = None
    if method.target_net is not None:
        target = lambda x: apply_train(method.target_net, state.target_params,
                                       state.target_batch_stats, x)[0]
    return online, target


def _hard_augment_pair(method, spec, dtype, state, rng, images, magnitude):
    """Hard Augment's selection with this state's networks: the hardest pair at full size."""
    online, target = _scoring_nets(method, state)
    loss = lambda oa, ob, ta, tb: method.pair_loss(oa, ob, ta, tb, state.method_state, state.step)
    return hard_augment.select(rng, images, magnitude, online, target, loss,
                               num_views=spec.num_views, r_sel=spec.r_sel,
                               resolution=spec.resolution, view_configs=method.view_configs,
                               dtype=dtype, cross=spec.cross_pairs)


def make_step_fn(method, tx, spec: StepSpec, dtype):
    """step(state, images (canvas.Images), magnitude) -> (state, metrics)."""
    net = method.net
    local = spec.local_crops
    student_crops = local is not None and multicrop.trains_student(method)

    def step_fn(state: TrainState, images, magnitude):
        step = state.step
        rng = jax.random.fold_in(state.rng, step)
        metrics, selection = {}, None
        if spec.num_views > 2:
            selection = _hard_augment_pair(method, spec, dtype, state, rng, images, magnitude)
            views, metrics = selection.pair, selection.stats
        else:
            views = augment.render_views(rng, images, magnitude, spec.resolution,
                                         method.view_configs, 2, dtype)
        target_out, target_stats = _target_outputs(method, state, views)
        ta = tb = None
        if target_out is not None:
            ta, tb = (jax.tree.map(lambda x, v=v: x[v], target_out) for v in (0, 1))
        pair_loss = lambda oa, ob, a, b: method.pair_loss(oa, ob, a, b, state.method_state, step)
        crops = local_targets = None
        if local is not None:
            crops = multicrop.render(rng, images, magnitude, local, dtype)
            if not student_crops:
                local_targets = multicrop.extra_targets(*_scoring_nets(method, state), crops)

        def loss_fn(params):
            out_a, stats = apply_train(net, params, state.batch_stats, views[0])
            out_b, stats = apply_train(net, params, stats, views[1])
            if student_crops:  # DINO: the student over every crop, the teacher's global views
                out_local, stats = apply_train(net, params, stats, multicrop.flatten(crops))
                per_sample = method.multicrop_loss(
                    [out_a, out_b, *multicrop.split(out_local, local.count)], [ta, tb],
                    state.method_state, step)
            else:
                per_sample = pair_loss(out_a, out_b, ta, tb)
            if local_targets is not None:  # the pair-loss methods: local crops as extra targets
                per_sample = per_sample + multicrop.extra_target_loss(
                    pair_loss, out_a, out_b, ta, tb, *local_targets)
            if spec.extra_targets and selection is not None:
                per_sample = per_sample + hard_augment.extra_target_loss(
                    pair_loss, out_a, out_b, ta, tb, selection)
            return per_sample.mean(), (stats, out_a, out_b)

        (loss, (batch_stats, out_a, out_b)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = method.adjust_updates(updates, step)
        params = optax.apply_updates(state.params, updates)
        target_params = state.target_params
        if method.ema_schedule is not None:
            tau = method.ema_schedule(step)
            target_params = jax.tree.map(lambda t, o: tau * t + (1 - tau) * o, target_params,
                                         {k: params[k] for k in target_params})
            metrics["ema_tau"] = tau
        method_state = method.update_state(state.method_state, out_a, out_b, ta, tb, step)
        hyper = opt_state.hyperparams
        grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
        update_ratio = optax.tree.norm(updates) / jnp.maximum(optax.tree.norm(state.params), 1e-12)
        metrics.update(loss=loss, lr=hyper["learning_rate"], momentum=hyper["momentum"],
                       grad_norm=grad_norm, param_norm=param_norm, update_ratio=update_ratio)
        if "weight_decay" in hyper:  # optim.py's optimizers (scheduled: optim.weight_decay_end)
            metrics["weight_decay"] = hyper["weight_decay"]
        new_state = state.replace(step=step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state, target_params=target_params,
                                  target_batch_stats=target_stats, method_state=method_state)
        healthy = is_healthy((loss, grads, new_state.params, new_state.batch_stats,
                              new_state.target_params, new_state.target_batch_stats,
                              new_state.method_state), grad_norm, param_norm, update_ratio,
                             spec.max_update_ratio)
        metrics["healthy"] = healthy  # checked before every checkpoint: see is_healthy
        if spec.skip_nonfinite:  # as optax.apply_if_finite: keep the state, go on to the next batch
            skipped = state.replace(step=step + 1)
            return jax.lax.cond(healthy, lambda: new_state, lambda: skipped), metrics
        return new_state, metrics

    return step_fn


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of all hosts) with a 'data' axis."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))
