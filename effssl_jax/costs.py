"""Training cost in FLOPs from a plan and XLA's cost analysis of each bucket's train step.

`plan_flops` lowers (traces, does not compile) the step of every resolution bucket on one device
and sums steps x FLOPs per step, as the paper computes cost; cheap enough for ResNet-50 at 224 px
on a laptop, so a recipe's speed-up can be checked before training it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from effssl_jax import experiment
from effssl_jax.compile import flops_of
from effssl_jax.step import data_mesh


def plan_flops(config, num_examples: int) -> dict:
    exp = experiment.build(config, num_examples, data_mesh(jax.devices()[:1]), jnp.float32)
    host = config.image_size or config.progressive.r_max
    steps = exp.compiled_steps()
    per_step = {r: flops_of(steps.lower(exp.spec(r, host))) for r in exp.plan.resolutions}
    steps.close()
    counts = {r: sum(s.steps for s in exp.plan.stages if s.resolution == r)
              for r in exp.plan.resolutions}
    return {"plan": exp.plan, "gflops_per_step": {r: f / 1e9 for r, f in per_step.items()},
            "steps": counts, "total_pflops": sum(counts[r] * per_step[r] for r in counts) / 1e15}
