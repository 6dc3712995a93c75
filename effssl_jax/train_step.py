"""The train state and the jitted, data-parallel train step (one compiled step per bucket)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import logging
import os
import pickle
import threading
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax._src import xla_bridge  # private: FLOPs where Lowered.cost_analysis is unimplemented
from jax._src.lib import _jax
from jax.experimental import serialize_executable
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from effssl_jax import augment, hard_augment


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    target_params: Any  # {} for methods without a target network
    target_batch_stats: Any
    method_state: Any
    rng: jax.Array


def create_state(method, tx, rng, resolution: int) -> TrainState:
    init_rng, rng = jax.random.split(rng)
    x = jnp.zeros((2, resolution, resolution, 3), jnp.float32)
    variables = method.net.init(init_rng, x, train=False)
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
    host_size: int
    local_batch: int
    extra_targets: bool = False  # Table 9: unselected low-res views as extra targets


def render_views(rng, images, magnitude, size: int, view_configs, n: int, dtype):
    """n augmented, normalised views of uint8 images [B, H, W, 3] at `size`: [n, B, size, size, 3].
    View v of sample i has its own key, so the same view can be rendered again at another size."""
    views = [augment.augment_batch(jax.random.fold_in(rng, v), images, size, magnitude,
                                   view_configs[v % 2]) for v in range(n)]
    return augment.normalize(jnp.stack(views)).astype(dtype)


def render_selected(rng, images, magnitude, size: int, view_configs, n: int, dtype, index):
    """render_views(...)[index[i], i] for every sample i, rendering only that view: [B, size,
    size, 3]. Hard Augment renders the n views at r_sel, and only the selected two at full size."""
    batch = images.shape[0]
    keys = jnp.stack([augment.view_keys(jax.random.fold_in(rng, v), batch) for v in range(n)])
    keys = keys[index, jnp.arange(batch)]
    x = augment.augment_with_keys(keys, images, size, magnitude, view_configs[0])
    if view_configs[1] != view_configs[0]:  # asymmetric views (BYOL, DINO): odd views differ
        odd = augment.augment_with_keys(keys, images, size, magnitude, view_configs[1])
        x = jnp.where((index % 2 == 1)[:, None, None, None], odd, x)
    return augment.normalize(x).astype(dtype)


def _apply(net, params, batch_stats, x):
    out, updates = net.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"])
    return out, updates["batch_stats"]


def make_step_fn(method, tx, spec: StepSpec, dtype,
                 mean=augment.IMAGENET_MEAN, std=augment.IMAGENET_STD):
    """step(state, images uint8 [B,H,W,3], magnitude) -> (state, metrics)."""
    net, target_net = method.net, method.target_net
    n, r = spec.num_views, spec.resolution

    make_views = lambda rng, images, magnitude, size: render_views(
        rng, images, magnitude, size, method.view_configs, n, dtype)

    def targets(state, views):
        """Target outputs for a stack of views [k, B, ...] (no gradient), and its BN stats."""
        if target_net is None:
            return None, state.target_batch_stats
        stats = state.target_batch_stats
        outs = []
        for v in range(views.shape[0]):
            out, stats = _apply(target_net, state.target_params, stats, views[v])
            outs.append(out)
        outs = jax.tree.map(lambda *x: jnp.stack(x), *outs)
        return jax.lax.stop_gradient(outs), stats

    def select(state, rng, images, magnitude, step):
        """Hard Augment: the n views rendered at r_sel are scored without gradients; the
        hardest pair of each sample is returned at full resolution."""
        small = make_views(rng, images, magnitude, spec.r_sel)
        fwd = lambda p, s, x: _apply(net, p, s, x)[0]
        online = jax.vmap(fwd, in_axes=(None, None, 0))(state.params, state.batch_stats, small)
        target = None
        if target_net is not None:
            target = jax.vmap(lambda x: _apply(target_net, state.target_params,
                                               state.target_batch_stats, x)[0])(small)
        loss_fn = lambda oa, ob, ta, tb: method.pair_loss(oa, ob, ta, tb, state.method_state, step)
        losses = jax.lax.stop_gradient(
            hard_augment.pair_losses(loss_fn, online, target, n))  # [P, B]
        a, b = hard_augment.hardest_pairs(losses, n)
        if spec.r_sel == r:
            pair = jnp.stack([hard_augment.gather_views(small, index) for index in (a, b)])
        else:
            pair = jnp.stack([render_selected(rng, images, magnitude, r, method.view_configs, n,
                                              dtype, index) for index in (a, b)])
        stats = {"ha_selected_loss": jnp.max(losses, 0).mean(), "ha_mean_loss": losses.mean()}
        unselected = (jnp.arange(n)[:, None] != a) & (jnp.arange(n)[:, None] != b)  # [n, B]
        extra = jax.lax.stop_gradient((online, target, unselected))
        return pair, stats, extra

    def extra_target_loss(out_a, out_b, ta, tb, extra, state, step):
        """Mean over the unselected selection-pass views k of the pair losses of each trained view
        with k; k's outputs are constants, so they act only as targets."""
        online, target, unselected = extra

        def against(k):
            ok = jax.tree.map(lambda x: x[k], online)
            tk = None if target is None else jax.tree.map(lambda x: x[k], target)
            return 0.5 * (method.pair_loss(out_a, ok, ta, tk, state.method_state, step)
                          + method.pair_loss(out_b, ok, tb, tk, state.method_state, step))

        losses = jax.vmap(against)(jnp.arange(n))  # [n, B]
        return (losses * unselected).sum(0) / jnp.maximum(unselected.sum(0), 1)

    def step_fn(state: TrainState, images, magnitude):
        step = state.step
        rng = jax.random.fold_in(state.rng, step)
        metrics, extra = {}, None
        if n > 2:
            views, metrics, extra = select(state, rng, images, magnitude, step)
        else:
            views = make_views(rng, images, magnitude, r)
        target_out, target_stats = targets(state, views)
        ta = tb = None
        if target_out is not None:
            ta, tb = jax.tree.map(lambda x: x[0], target_out), jax.tree.map(lambda x: x[1], target_out)

        def loss_fn(params):
            out_a, stats = _apply(net, params, state.batch_stats, views[0])
            out_b, stats = _apply(net, params, stats, views[1])
            per_sample = method.pair_loss(out_a, out_b, ta, tb, state.method_state, step)
            if spec.extra_targets and extra is not None:
                per_sample = per_sample + extra_target_loss(out_a, out_b, ta, tb, extra, state, step)
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
        metrics.update(loss=loss, lr=hyper["learning_rate"], momentum=hyper["momentum"],
                       grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
        new_state = state.replace(step=step + 1, params=params, batch_stats=batch_stats,
                                  opt_state=opt_state, target_params=target_params,
                                  target_batch_stats=target_stats, method_state=method_state)
        return new_state, metrics

    return step_fn


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of all hosts) with a 'data' axis."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


STEP_CACHE_BYTES = 2**30  # the serialised steps kept (~6 MB per ResNet-18 bucket on CPU)


class CompiledSteps:
    """The compiled train steps, keyed by StepSpec: each is lowered and compiled exactly once, and
    its FLOPs (XLA cost analysis) recorded. XLA compiles (and loads) them on one background thread,
    so `prefetch(spec)` gets the next resolution bucket's step ready while the current one trains,
    and `get(spec)` waits for it.

    With `cache_dir`, each compiled step is also serialised there, keyed by `fingerprint` (what
    the step's code and constants depend on: see `step_fingerprint`), the spec, the state's
    shapes, the devices and the JAX/XLA versions; a later process (a resumed run) loads it
    without tracing, lowering or compiling. Single-process only; steps that XLA's persistent
    cache supplied are not serialised (they would not run again, see `_compile`)."""

    def __init__(self, make_fn: Callable[[StepSpec], Callable], mesh: Mesh, state_shapes,
                 cache_dir: str | None = None, fingerprint: str = ""):
        self._make_fn, self._mesh, self._state_shapes = make_fn, mesh, state_shapes
        self._replicated = NamedSharding(mesh, P())
        self._batch = NamedSharding(mesh, P("data"))
        self._cache_dir = cache_dir if jax.process_count() == 1 else None
        self._fingerprint = fingerprint
        self.compiled: dict[StepSpec, Any] = {}
        self.flops: dict[StepSpec, float] = {}
        self.selection_flops: dict[StepSpec, float] = {}
        self.loaded: set[StepSpec] = set()  # specs loaded from cache_dir
        self._futures: dict[StepSpec, concurrent.futures.Future] = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")

    def _lower(self, spec: StepSpec):
        fn = jax.jit(self._make_fn(spec), in_shardings=(self._replicated, self._batch, None),
                     out_shardings=(self._replicated, self._replicated), donate_argnums=(0,))
        global_batch = spec.local_batch * jax.process_count()
        images = jax.ShapeDtypeStruct((global_batch, spec.host_size, spec.host_size, 3),
                                      jnp.uint8, sharding=self._batch)
        return fn.lower(self._state_shapes, images, jax.ShapeDtypeStruct((), jnp.float32))

    def prefetch(self, spec: StepSpec) -> None:
        """Starts getting `spec`'s step (no-op if already started): a serialised step is loaded,
        and otherwise the step is traced and lowered here, so that the caller's JAX config
        (thread-local, e.g. `jax.enable_x64()`) applies, and XLA compiles it on the compile
        thread."""
        if spec in self._futures:
            return
        if self._cache_dir and os.path.exists(self._cache_path(spec)):
            self._futures[spec] = self._worker.submit(self._load, spec)
        else:
            self._futures[spec] = self._worker.submit(self._compile, spec, *self._lower_all(spec))

    def get(self, spec: StepSpec):
        self.prefetch(spec)
        self._futures[spec].result()  # raises what the compile raised
        if spec not in self.compiled:  # a serialised step that could not be loaded
            self._compile(spec, *self._lower_all(spec))
        return self.compiled[spec]

    def close(self) -> None:
        """Cancels the prefetches not started and waits for the one compiling."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _lower_all(self, spec: StepSpec):
        """The lowered step and, with Hard Augment, the same step without selection (lowered
        only, never compiled: its FLOPs give selection's share)."""
        lowered = self._lower(spec)
        if spec.num_views <= 2:
            return lowered, None
        return lowered, self._lower(dataclasses.replace(spec, num_views=2))

    def _compile(self, spec: StepSpec, lowered, plain) -> None:
        with _persistent_cache_hits() as hits:
            compiled = lowered.compile()
        self.flops[spec] = flops_of(lowered)
        self.selection_flops[spec] = 0.0 if plain is None else self.flops[spec] - flops_of(plain)
        self.compiled[spec] = compiled
        if not hits:  # jaxlib 0.10 (CPU): an executable loaded from XLA's persistent cache
            self._save(spec)  # serialises without its kernels and fails when run

    @property
    def compile_count(self) -> int:
        return len(self.compiled)

    def _cache_path(self, spec: StepSpec) -> str:
        import jaxlib
        leaves = [(a.shape, str(a.dtype), str(a.sharding.spec))
                  for a in jax.tree.leaves(self._state_shapes)]
        key = "\n".join(map(str, (
            self._fingerprint, spec, jax.__version__, jaxlib.__version__,
            os.environ.get("XLA_FLAGS", ""), self._mesh.devices.shape,
            [d.device_kind for d in self._mesh.devices.flat],
            jax.tree.structure(self._state_shapes), leaves)))
        digest = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self._cache_dir, digest + ".pkl")

    def _load(self, spec: StepSpec) -> bool:
        if not self._cache_dir or not os.path.exists(path := self._cache_path(spec)):
            return False
        try:
            with open(path, "rb") as f:
                payload, in_tree, out_tree, flops, selection_flops = pickle.load(f)
            self.compiled[spec] = serialize_executable.deserialize_and_load(
                payload, in_tree, out_tree, execution_devices=list(self._mesh.devices.flat))
        except Exception as e:  # stale or truncated entry: compile instead
            logging.warning("could not load the compiled step %s (%s); compiling it", path, e)
            return False
        self.flops[spec], self.selection_flops[spec] = flops, selection_flops
        self.loaded.add(spec)
        with contextlib.suppress(OSError):  # marks it recently used, for _prune
            os.utime(path)
        return True

    def _save(self, spec: StepSpec) -> None:
        if not self._cache_dir:
            return
        try:
            entry = (*serialize_executable.serialize(self.compiled[spec]), self.flops[spec],
                     self.selection_flops[spec])
            path = self._cache_path(spec)
            os.makedirs(self._cache_dir, exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                pickle.dump(entry, f)
            os.replace(path + ".tmp", path)
            _prune(self._cache_dir, STEP_CACHE_BYTES)
        except Exception as e:  # e.g. a backend that cannot serialise executables
            logging.warning("compiled step not cached (%s)", e)
            self._cache_dir = None


def _prune(folder: str, max_bytes: int) -> None:
    """Deletes the least recently used entries until the folder holds at most max_bytes."""
    entries = []
    for e in os.scandir(folder):
        with contextlib.suppress(OSError):  # another process may have removed it meanwhile
            if e.name.endswith(".pkl"):
                entries.append((e.stat().st_mtime, e.stat().st_size, e.path))
    entries.sort()
    total = sum(size for _, size, _ in entries)
    for _, size, path in entries[:-1]:  # never the newest
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.remove(path)
        total -= size


@contextlib.contextmanager
def _persistent_cache_hits():
    """Collects the persistent-compilation-cache hits of this thread's compiles inside the block
    (the listener is global: other threads may compile meanwhile)."""
    hits, thread = [], threading.get_ident()

    def listener(event, **unused):
        if event == "/jax/compilation_cache/cache_hits" and threading.get_ident() == thread:
            hits.append(event)

    jax.monitoring.register_event_listener(listener)
    try:
        yield hits
    finally:
        jax.monitoring.unregister_event_listener(listener)


def step_fingerprint(config, num_train: int) -> str:
    """What a compiled step depends on besides its spec and shapes: the config (less the keys
    that only touch logging, data loading and evaluation), the dataset size (it sets the
    schedules) and this package's source code."""
    c = config.to_dict()
    for key in ("name", "compare_to", "progress_bar", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints", "prefetch", "data", "eval"):
        c.pop(key, None)
    package = os.path.dirname(os.path.abspath(__file__))
    code = hashlib.sha256()
    for root, _, files in sorted(os.walk(package)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(root, name), "rb") as f:
                code.update(name.encode() + f.read())
    return f"{sorted(c.items())!r} {num_train} {code.hexdigest()}"


def flops_of(lowered) -> float:
    """FLOPs of one call of a lowered computation, all devices together: XLA's cost analysis of
    its HLO before backend optimisation, the same on every backend. The compiled executable's
    analysis misses what the backend hands to libraries (on GPU, cuDNN's convolutions: it counted
    2-4% of a ResNet-50 step on an H200) and, on CPU, is 0.7-1.1% above this count. Backends
    behind a PJRT plugin (CUDA, TPU) analyse compiled executables only: their HLO is analysed by
    the CPU client, which JAX starts on every host (unless JAX_PLATFORMS leaves it out)."""
    try:
        analysis = lowered.cost_analysis()
    except NotImplementedError:
        analysis = None
    if not analysis:
        try:
            cpu = xla_bridge.get_backend("cpu")
        except RuntimeError as e:
            raise RuntimeError("FLOPs are counted by the CPU client, which is not running; add "
                               "cpu to JAX_PLATFORMS (e.g. JAX_PLATFORMS=cuda,cpu)") from e
        analysis = _jax.hlo_module_cost_analysis(cpu, lowered.compiler_ir("hlo").as_hlo_module())
    return float(analysis.get("flops", 0.0))
