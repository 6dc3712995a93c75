"""Training cost in FLOPs from a plan and XLA's cost analysis of each bucket's train step.

`plan_flops` lowers (traces, does not compile) the step of every resolution bucket on one device
and sums steps x FLOPs per step, as the paper computes cost; cheap enough for ResNet-50 at 224 px
on a laptop, so a recipe's speed-up can be checked before training it.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from effssl_jax.train_step import StepSpec, data_mesh, flops_of, make_step_fn


def load_config(path_and_arg: str):
    """'configs/x.py[:arg]' -> the config, as launch.py's --config would build it."""
    path, _, arg = path_and_arg.partition(":")
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def plan_flops(config, num_examples: int) -> dict:
    from effssl_jax.train import build_state  # train imports this module's users, not vice versa

    mesh = data_mesh(jax.devices()[:1])
    plan, method, tx, _, state = build_state(config, mesh, jnp.float32, num_examples)
    host = config.image_size or config.progressive.r_max
    images = jax.ShapeDtypeStruct((config.batch_size, host, host, 3), jnp.uint8,
                                  sharding=NamedSharding(mesh, P("data")))
    per_step = {}
    for r in plan.resolutions:
        spec = StepSpec(r, plan.num_views, plan.selection_resolution(r), host, config.batch_size)
        lowered = jax.jit(make_step_fn(method, tx, spec, jnp.float32)).lower(
            state, images, jax.ShapeDtypeStruct((), jnp.float32))
        per_step[r] = flops_of(lowered)
    steps = {r: sum(s.steps for s in plan.stages if s.resolution == r) for r in plan.resolutions}
    return {"plan": plan, "gflops_per_step": {r: f / 1e9 for r, f in per_step.items()},
            "steps": steps, "total_pflops": sum(steps[r] * per_step[r] for r in steps) / 1e15}
