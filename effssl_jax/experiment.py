"""A run built from its config: plan, method, optimizer, mesh, state initialiser and compiled
steps; or restored from a workdir. The one place that composes model + method + optimizer, used
by train, evaluate, export, the benchmarks and the tests.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import checkpoint, config_schema, hard_augment, multicrop, optim
from effssl_jax import plan as plan_lib
from effssl_jax.compile import CompiledSteps
from effssl_jax.data import canvas
from effssl_jax.methods import recipes
from effssl_jax.networks import build_method
from effssl_jax.plan import Plan
from effssl_jax.step import StepSpec, create_state, data_mesh, make_step_fn


def enable_dtype(name: str) -> None:
    """Turns on 64-bit JAX for dtype=float64 (before the run's first JAX work); else nothing."""
    if name == "float64":
        jax.config.update("jax_enable_x64", True)


def compute_dtype(name: str):
    """'auto': bfloat16 on GPU/TPU, float32 on CPU (parameters stay float32 either way).

    'float64' computes and keeps the parameters in float64 (64-bit JAX only). It is for checks
    that runs on different device layouts agree: in float32 a few steps of a small network
    amplify the rounding of reductions done in another order into visibly different losses."""
    if name == "float64" and not jax.config.jax_enable_x64:
        raise config_schema.ConfigError("dtype=float64 needs 64-bit JAX: call "
                                        "experiment.enable_dtype first, or set JAX_ENABLE_X64=1")
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}[name]


def eval_resolution(config) -> int:
    """The resolution a config's evaluations run at."""
    return config.eval.resolution or config.progressive.r_max


def host_size(config, view_configs, resolution: int) -> canvas.HostSize:
    """How the host keeps images for the views of a step at `resolution` (data/canvas.py): sharp
    enough for the smallest and most elongated box that the global views (`view_configs`, at
    `resolution`) and the local crops (multicrop.py, at their side) draw."""
    needs = [(resolution, view_configs)]
    local = multicrop.at_resolution(config, resolution, recipes.local_view_configs(
        config.method, config.augment, view_configs))
    if local is not None:
        needs.append((local.resolution, local.view_configs))
    short = config.image_size or max(
        canvas.short_side(r, min(v.crop_scale[0] for v in views),
                          max(max(v.crop_ratio) for v in views)) for r, views in needs)
    return canvas.for_short_side(short, config.data.canvas_aspect)


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: Any
    plan: Plan
    method: Any
    tx: Any  # the optax optimizer
    mesh: Mesh
    dtype: Any
    init: Callable  # jitted rng -> replicated TrainState
    abstract_state: Any  # jax.ShapeDtypeStruct pytree with shardings (orbax restore target)

    @property
    def local_batch(self) -> int:
        return self.config.batch_size // jax.process_count()

    @property
    def abstract_variables(self) -> dict:
        return {"params": self.abstract_state.params,
                "batch_stats": self.abstract_state.batch_stats}

    def host_size(self, resolution: int) -> canvas.HostSize:
        return host_size(self.config, self.method.view_configs, resolution)

    def spec(self, resolution: int, canvas_side: int) -> StepSpec:
        """The static description of the compiled train step at `resolution` on images in a
        canvas of `canvas_side`, with the run's local crops at their side for `resolution`."""
        c = self.config
        local = multicrop.at_resolution(c, resolution, recipes.local_view_configs(
            c.method, c.augment, self.method.view_configs))
        return StepSpec(resolution, self.plan.num_views,
                        self.plan.selection_side(resolution), canvas_side, self.local_batch,
                        c.hard_augment.extra_targets, c.optim.on_nonfinite == "skip",
                        c.optim.max_update_ratio, local,
                        hard_augment.cross_pairs(c.hard_augment.pairs, self.method.view_configs))

    def step_fn(self, spec: StepSpec) -> Callable:
        return make_step_fn(self.method, self.tx, spec, self.dtype)

    def compiled_steps(self) -> CompiledSteps:
        return CompiledSteps(self.step_fn, self.mesh, self.abstract_state)


def build(config, num_train: int, mesh: Mesh | None = None, dtype=None) -> Experiment:
    """The experiment of `config` over `num_train` pretraining images (they set the schedules,
    not the state's shapes). Default mesh: all devices; default dtype: config.dtype."""
    mesh = data_mesh() if mesh is None else mesh
    dtype = compute_dtype(config.dtype) if dtype is None else dtype
    plan = plan_lib.make_plan(config, num_train)
    method = build_method(config, dtype, plan.steps_per_epoch, plan.total_steps)
    tx = optim.from_config(config.optim, plan.lr, plan.momentum, plan.total_steps)
    replicated = NamedSharding(mesh, P())
    param_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
    init = jax.jit(lambda rng: create_state(method, tx, rng, config.progressive.r_max,
                                            param_dtype), out_shardings=replicated)
    abstract = checkpoint.abstract_like(jax.eval_shape(init, jax.random.key(config.seed)),
                                        replicated)
    return Experiment(config, plan, method, tx, mesh, dtype, init, abstract)


def restore(workdir: str, step: int | None = None, num_train: int | None = None):
    """(experiment, train state, checkpoint step) of WORKDIR's checkpoint `step` (default: the
    latest), with the config the run was trained with and the plan of its dataset size (saved in
    the run record). num_train stands in for that size only in checkpoints written before runs
    saved it (the state's shapes do not depend on it; its schedules do)."""
    config = config_schema.from_workdir(workdir)
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints, create=False)
    try:
        saved_size = ckpt.read_record(step).num_examples
        exp = build(config, saved_size or num_train or config.batch_size)
        state, _ = ckpt.restore(exp.abstract_state, step)
    finally:
        ckpt.close()
    return exp, state, int(state.step)
