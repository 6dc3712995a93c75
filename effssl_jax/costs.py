"""Training cost in FLOPs, in two conventions.

* XLA's (`total_pflops`): XLA's cost analysis of each bucket's real train step (compile.flops_of):
  augmentation, both views' forward and the real backward (about twice the forward: gradients of
  the activations and of the weights), the target network, the optimizer, Hard Augment's scoring.
* The paper's (`pflops_paper`): a training image costs views x 2 x the online network's forward
  (the backward counted equal to the forward) plus the target network's forward of each view;
  Hard Augment adds its scoring forwards (every view at r_sel, online and target); local crops
  (multicrop.py) add, at their side, 2 x the online forward each where the method trains on them
  (DINO's student) or the online and target forwards each where they are extra targets (the
  pair-loss methods). Forwards count
  2 FLOPs per multiply-add of every convolution and matmul and nothing else, as fvcore and thop
  do, over the architecture (XLA's own convolution, whatever `model.conv_impl` runs). This is how
  the paper's Table 2 counts; docs/performance.md compares the two conventions.

Speed-ups are ratios within one convention. `plan_flops` gives both for a plan before training.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from effssl_jax import experiment, multicrop
from effssl_jax.compile import flops_of
from effssl_jax.step import data_mesh

TRAIN_VIEWS = 2  # every method trains on a pair of views (the hardest pair under Hard Augment)


def _macs(jaxpr) -> float:
    """Multiply-adds of the convolutions and matmuls of a jaxpr, sub-jaxprs included."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            kernel, out = eqn.invars[1].aval, eqn.outvars[0].aval
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial)
            total += math.prod(out.shape) * math.prod(
                kernel.shape[d] for d in spec[1:])  # in feature = C_in / groups
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            total += math.prod(out.shape) * math.prod(lhs.shape[d] for d in contract)
        repeat = eqn.params.get("length", 1) if name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    total += repeat * _macs(sub)
    return total


def forward_flops(net, resolution: int) -> float:
    """FLOPs of one image's forward through `net` at `resolution`, in the paper's convention."""
    x = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
    variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False))
    jaxpr = jax.make_jaxpr(lambda v, x: net.apply(v, x, train=False))(variables, x)
    return 2.0 * _macs(jaxpr.jaxpr)


class PaperCost:
    """The paper's FLOPs per training image at each resolution, for one config."""

    def __init__(self, config):
        arch = config.copy_and_resolve_references()
        arch.model.conv_impl = "xla"  # count the architecture, not the CPU's im2col rewrite
        self._method = experiment.build_method(arch, jnp.float32, 1, 1)
        h = config.hard_augment
        self._selection = (h.num_views, h.r_sel) if h.enabled else None
        self._local = config.augment.local_crops.count > 0
        self._config = config
        self._cache: dict[int, tuple[float, float]] = {}

    def _forwards(self, resolution: int) -> tuple[float, float]:
        """(online, target) forward FLOPs of one image at `resolution`, traced once."""
        if resolution not in self._cache:
            target = self._method.target_net
            self._cache[resolution] = (
                forward_flops(self._method.net, resolution),
                forward_flops(target, resolution) if target is not None else 0.0)
        return self._cache[resolution]

    def per_image(self, resolution: int) -> float:
        online, target = self._forwards(resolution)
        flops = TRAIN_VIEWS * (2 * online + target)
        if self._selection is not None:
            num_views, r_sel = self._selection
            flops += num_views * sum(self._forwards(min(r_sel, resolution)))
        if self._local:
            local = multicrop.at_resolution(self._config, resolution, ())
            online, target = self._forwards(local.resolution)
            trained = multicrop.trains_student(self._method)
            flops += local.count * (2 * online if trained else online + target)
        return flops

    def pflops(self, steps_by_resolution: dict, plan) -> float:
        """PFLOPs of the steps run at each resolution ({resolution: steps}, keys int or str).
        As in the paper, an epoch costs the whole dataset (plan.num_examples images), so a step
        counts num_examples / steps_per_epoch images, the dropped incomplete batch included."""
        images_per_step = plan.num_examples / plan.steps_per_epoch
        return sum(int(n) * images_per_step * self.per_image(int(r))
                   for r, n in steps_by_resolution.items()) / 1e15


def plan_flops(config, num_examples: int) -> dict:
    """A plan's cost before training: XLA's count of every bucket's step (lowered on one device,
    not compiled; cheap enough for ResNet-50 at 224 px on a laptop) and the paper's."""
    exp = experiment.build(config, num_examples, data_mesh(jax.devices()[:1]), jnp.float32)
    steps = exp.compiled_steps()  # on each bucket's canvas, as the streaming loader sends it
    per_step = {r: flops_of(steps.lower(exp.spec(r, exp.host_size(r).canvas)))
                for r in exp.plan.resolutions}
    steps.close()
    counts = exp.plan.steps_by_resolution()
    return {"plan": exp.plan, "gflops_per_step": {r: f / 1e9 for r, f in per_step.items()},
            "steps": counts, "total_pflops": sum(counts[r] * per_step[r] for r in counts) / 1e15,
            "pflops_paper": PaperCost(config).pflops(counts, exp.plan)}
