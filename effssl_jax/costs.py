"""Everything a run counts about cost, in one module: FLOPs in two conventions, the speed-up a plan
predicts before training, and what summary.json reports about cost. The paper's models of cost
stay with their ideas (eq. 9 in progressive.py, eq. 11 in hard_augment.py); this module applies
them.

* XLA's convention (`flops_of`, `total_pflops`): XLA's cost analysis of each bucket's real train
  step: augmentation, both views' forward and the real backward (about twice the forward:
  gradients of the activations and of the weights), the target network, the optimizer, Hard
  Augment's scoring.
* The paper's (`PaperCost`, `pflops_paper`): a training image costs views x 2 x the online
  network's forward (the backward counted equal to the forward) plus the target network's forward
  of each view; Hard Augment adds its scoring forwards (every view at r_sel, online and target);
  local crops (multicrop.py) add, at their side, 2 x the online forward each where the method
  trains on them (DINO's student) or the online and target forwards each where they are extra
  targets (the pair-loss methods). Forwards count 2 FLOPs per multiply-add of every convolution
  and matmul and nothing else, as fvcore and thop do, over the architecture (XLA's own
  convolution, whatever `model.conv_impl` runs). This is how the paper's Table 2 counts;
  docs/performance.md compares the two conventions.

Speed-ups are ratios within one convention.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.extend import backend as jax_backend

from effssl_jax import hard_augment, jax_internals, multicrop, networks, progressive
from effssl_jax.models import backbones

TRAIN_VIEWS = 2  # every method trains on a pair of views (the hardest pair under Hard Augment)


# --- XLA's convention: the programs that run, measured ----------------------------------------

def flops_of(lowered) -> float:
    """FLOPs of one call of a lowered computation, all devices together: XLA's cost analysis of
    its HLO before backend optimisation, the same on every backend (the compiled executable's
    analysis misses what a backend hands to libraries, such as cuDNN's convolutions). Backends
    behind a PJRT plugin (CUDA, TPU) analyse compiled executables only: their HLO is analysed by
    the CPU client, which JAX starts on every host unless JAX_PLATFORMS leaves it out."""
    try:
        analysis = lowered.cost_analysis()
    except NotImplementedError:
        analysis = None
    if not analysis:
        try:
            cpu = jax_backend.get_backend("cpu")
        except RuntimeError as e:
            raise RuntimeError("FLOPs are counted by the CPU client, which is not running; add "
                               "cpu to JAX_PLATFORMS (e.g. JAX_PLATFORMS=cuda,cpu)") from e
        analysis = jax_internals.hlo_cost_analysis(
            cpu, lowered.compiler_ir("hlo").as_hlo_module())
    return float(analysis.get("flops", 0.0))


def xla_forward_flops(module, resolutions) -> dict[int, float]:
    """{resolution: XLA's FLOPs (flops_of) of one image's forward through `module` in evaluation
    mode}, lowered on abstract inputs (nothing is compiled or run). The variables' shapes are
    taken at the largest resolution; a module whose parameters depend on the input side (a ViT's
    position embedding does not: it is stored for its img_size and resampled) is not meant."""
    resolutions = sorted(int(r) for r in resolutions)
    image = lambda r: jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False),
                               image(resolutions[-1]))
    forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
    return {r: flops_of(forward.lower(variables, image(r))) for r in resolutions}


# --- The paper's convention: multiply-adds of the architecture ------------------------------

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


def paper_forward_flops(net, resolution: int) -> float:
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
        self._method = networks.build_method(arch, jnp.float32, 1, 1)
        self._scored_views = config.hard_augment.num_views if config.hard_augment.enabled else 0
        self._local = config.augment.local_crops.count > 0
        self._config = config
        self._cache: dict[int, tuple[float, float]] = {}

    def _forwards(self, resolution: int) -> tuple[float, float]:
        """(online, target) forward FLOPs of one image at `resolution`, traced once."""
        if resolution not in self._cache:
            target = self._method.target_net
            self._cache[resolution] = (
                paper_forward_flops(self._method.net, resolution),
                paper_forward_flops(target, resolution) if target is not None else 0.0)
        return self._cache[resolution]

    def per_image(self, resolution: int) -> float:
        online, target = self._forwards(resolution)
        flops = TRAIN_VIEWS * (2 * online + target)
        if self._scored_views:
            side = hard_augment.selection_side(self._config, resolution)
            flops += self._scored_views * sum(self._forwards(side))
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


# --- Before training: what the plan predicts --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Speedup:
    """The resolution plan's predicted speed-up over training at r_max throughout."""
    predicted: float  # from `basis`
    basis: str  # 'measured_flops' (backbone FLOPs per bucket, XLA's) or 'eq9_r2'
    eq9: float  # eq. 9 (cost form, cost quadratic in resolution), whatever the basis


def predicted_speedup(config, plan) -> Speedup:
    """Eq. 9 for backbones whose cost is quadratic in resolution (ResNets); for the others (ViTs:
    backbones.cost_is_quadratic) the same cost ratio with each bucket's backbone forward measured
    by XLA (lowered, not compiled, at batch 1 in float32, so that it does not depend on the
    device)."""
    eq9 = progressive.predicted_speedup(list(plan.stages), plan.r_max)
    if backbones.cost_is_quadratic(config.model.arch):
        return Speedup(eq9, "eq9_r2", eq9)
    flops = xla_forward_flops(backbones.from_config(config, jnp.float32),
                              {*plan.resolutions, plan.r_max})
    return Speedup(progressive.measured_speedup(list(plan.stages), flops, plan.r_max),
                   "measured_flops", eq9)


@dataclasses.dataclass(frozen=True)
class Forecast:
    """A run's cost model before training: the speed-up its plan predicts, Hard Augment's overhead
    (eq. 11) and the paper's convention (per image, and the whole plan's PFLOPs)."""
    speedup: Speedup
    paper: PaperCost
    plan_pflops_paper: float
    selection_overhead_eq11: float | None  # Hard Augment's at r_max; None without it

    def describe(self) -> str:
        s = self.speedup
        line = (f"predicted speed-up of the resolution plan (backbone FLOPs per bucket, XLA's "
                f"cost analysis): {s.predicted:.2f}x (eq. 9's r^2 model: {s.eq9:.2f}x)"
                if s.basis == "measured_flops" else
                f"predicted speed-up of the resolution plan (eq. 9): {s.predicted:.2f}x")
        if self.selection_overhead_eq11 is not None:
            line += ("\nHard Augment's selection overhead at r_max (eq. 11): "
                     f"{100 * self.selection_overhead_eq11:.1f}%")
        return (f"{line}\ntraining cost in the paper's convention (costs.py): "
                f"{self.plan_pflops_paper:.4g} PFLOPs")


def forecast(config, plan) -> Forecast:
    paper = PaperCost(config)
    overhead = (1 - hard_augment.speed_factor(plan.r_max, plan.selection_side(plan.r_max),
                                              plan.num_views)
                if plan.hard_augment else None)
    return Forecast(predicted_speedup(config, plan), paper,
                    paper.pflops(plan.steps_by_resolution(), plan), overhead)


def plan_flops(exp) -> dict:
    """The cost of an experiment's plan before training: XLA's count of every bucket's step
    (lowered, not compiled; cheap enough for ResNet-50 at 224 px on a laptop) and the paper's.
    Build `exp` on one device in float32 (experiment.build) for a count that is the device's."""
    steps = exp.compiled_steps()  # on each bucket's canvas, as the streaming loader sends it
    per_step = {r: flops_of(steps.lower(exp.spec(r, exp.host_size(r).canvas)))
                for r in exp.plan.resolutions}
    steps.close()
    counts, predicted = exp.plan.steps_by_resolution(), forecast(exp.config, exp.plan)
    return {"plan": exp.plan, "gflops_per_step": {r: f / 1e9 for r, f in per_step.items()},
            "steps": counts, "total_pflops": sum(counts[r] * per_step[r] for r in counts) / 1e15,
            "pflops_paper": predicted.plan_pflops_paper, "speedup": predicted.speedup}


# --- After training: what summary.json reports about cost -------------------------------------

@dataclasses.dataclass(frozen=True)
class RunCost:
    """What summary.json reports about a run's cost, each key a field: the clocks and FLOPs the
    run record accumulated (both conventions), the FLOPs of this session's compiled steps, the
    plan's predicted speed-ups and, with --config.compare_to, the speed-ups against a baseline."""
    wall_clock_s: float
    train_time_s: float  # without compile waits, evaluation and checkpoints
    compile_s: float
    eval_s: float
    total_pflops: float
    pflops_paper: float
    eval_pflops: float
    selection_pflops: float
    selection_overhead: float  # Hard Augment's measured share of the training FLOPs
    selection_overhead_eq11: float
    pflops_by_resolution: dict[str, float]
    steps_by_resolution: dict[str, int]
    gflops_per_step: dict[str, float]
    predicted_speedup_resolution: float
    predicted_speedup_basis: str
    predicted_speedup_eq9: float
    compiled_steps: int
    speedup_vs: dict | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if self.speedup_vs is None:
            del out["speedup_vs"]
        return out


def run_cost(plan, record, forecast: Forecast, steps, baseline: dict | None = None,
             baseline_workdir: str = "") -> RunCost:
    """The cost of a run from its run record (run_record.RunRecord), its forecast and `steps`
    (compile.CompiledSteps: this session's compiled steps and their FLOPs); `baseline`: the
    summary.json of the run in `baseline_workdir` to compare with."""
    train_flops = record.train_flops
    pflops_paper = forecast.paper.pflops(record.steps_by_resolution, plan)
    cost = RunCost(
        wall_clock_s=round(record.wall_clock_s, 2), train_time_s=round(record.train_time_s, 2),
        compile_s=round(record.compile_s, 2), eval_s=round(record.eval_s, 2),
        total_pflops=train_flops / 1e15, pflops_paper=pflops_paper,
        eval_pflops=record.eval_flops / 1e15, selection_pflops=record.selection_flops / 1e15,
        selection_overhead=record.selection_flops / max(train_flops, 1e-9),
        selection_overhead_eq11=hard_augment.overhead_eq11(
            record.steps_by_resolution, plan.selection_side, plan.num_views)
        if plan.hard_augment else 0.0,
        pflops_by_resolution={k: v / 1e15 for k, v in record.flops_by_resolution.items()},
        steps_by_resolution=record.steps_by_resolution,
        gflops_per_step={str(s.resolution): f / 1e9 for s, f in steps.flops.items()},
        predicted_speedup_resolution=forecast.speedup.predicted,
        predicted_speedup_basis=forecast.speedup.basis,
        predicted_speedup_eq9=forecast.speedup.eq9, compiled_steps=steps.compile_count)
    if baseline is None:
        return cost
    return dataclasses.replace(cost, speedup_vs={
        "workdir": baseline_workdir, "flops": baseline["total_pflops"] / cost.total_pflops,
        "flops_paper": (baseline["pflops_paper"] / pflops_paper
                        if baseline.get("pflops_paper") else None),
        "train_time": baseline["train_time_s"] / max(cost.train_time_s, 1e-9)})
