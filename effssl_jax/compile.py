"""One compiled train step per resolution bucket, compiled ahead of time, with its FLOPs
(costs.flops_of); JAX's persistent compilation cache.

A Super Progressive run visits its buckets in order, so while one bucket trains the next bucket's
step is compiled on a background thread (`CompiledSteps.prefetch`); the loop waits only if XLA
has not finished by the time the bucket starts.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import storage
from effssl_jax.costs import flops_of
from effssl_jax.data.canvas import Images
from effssl_jax.step import StepSpec

XLA_CACHE_BYTES = 4 * 2**30  # least recently used executables are evicted beyond this


def enable_persistent_cache(workdir: str) -> None:
    """JAX's persistent XLA cache next to the workdir (<parent>/.jax_cache), or where JAX's own
    JAX_COMPILATION_CACHE_DIR says: a sibling or resumed run with the same shapes loads its
    buckets' executables instead of compiling them again. It stays on local disk for a workdir in
    a bucket (~/.cache/effssl_jax/.jax_cache): each host compiles for its own devices anyway."""
    parent = (os.path.expanduser(os.path.join("~", ".cache", "effssl_jax"))
              if storage.is_remote(workdir) else os.path.dirname(os.path.abspath(workdir)))
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(parent, ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class CompiledSteps:
    """The compiled train steps, keyed by StepSpec: each is lowered and compiled exactly once, and
    its FLOPs recorded (`flops`; with Hard Augment, `selection_flops` is the selection pass's
    share). XLA compiles on one background thread, so `prefetch(spec)` gets the next bucket's step
    ready while the current one trains, and `get(spec)` waits for it."""

    def __init__(self, make_fn: Callable[[StepSpec], Callable], mesh: Mesh, state_shapes):
        self._make_fn, self._state_shapes = make_fn, state_shapes
        self._replicated = NamedSharding(mesh, P())
        self._batch = NamedSharding(mesh, P("data"))
        self.compiled: dict[StepSpec, Any] = {}
        self.flops: dict[StepSpec, float] = {}
        self.selection_flops: dict[StepSpec, float] = {}
        self._futures: dict[StepSpec, concurrent.futures.Future] = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")

    def lower(self, spec: StepSpec):
        """The step of `spec` jitted over the mesh and lowered (traced, not compiled)."""
        fn = jax.jit(self._make_fn(spec), in_shardings=(self._replicated, self._batch, None),
                     out_shardings=(self._replicated, self._replicated), donate_argnums=(0,))
        global_batch = spec.local_batch * jax.process_count()
        images = Images(
            jax.ShapeDtypeStruct((global_batch, spec.canvas, spec.canvas, 3), jnp.uint8,
                                 sharding=self._batch),
            jax.ShapeDtypeStruct((global_batch, 2), jnp.int32, sharding=self._batch))
        return fn.lower(self._state_shapes, images, jax.ShapeDtypeStruct((), jnp.float32))

    def prefetch(self, spec: StepSpec) -> None:
        """Starts getting `spec`'s step (no-op if already started). It is traced and lowered here,
        so that the caller's JAX config (thread-local, e.g. `jax.enable_x64()`) applies, and
        compiled on the compile thread. With Hard Augment the same step without selection is
        lowered too (never compiled): its FLOPs give selection's share."""
        if spec in self._futures:
            return
        lowered = self.lower(spec)
        plain = self.lower(dataclasses.replace(spec, num_views=2)) if spec.num_views > 2 else None
        self._futures[spec] = self._worker.submit(self._compile, spec, lowered, plain)

    def ready(self, spec: StepSpec) -> bool:
        """Whether `get(spec)` returns without waiting for XLA."""
        return spec in self._futures and self._futures[spec].done()

    def get(self, spec: StepSpec):
        self.prefetch(spec)
        self._futures[spec].result()  # raises what the compile raised
        return self.compiled[spec]

    def close(self) -> None:
        """Cancels the prefetches not started and waits for the one compiling."""
        self._worker.shutdown(wait=True, cancel_futures=True)

    def _compile(self, spec: StepSpec, lowered, plain) -> None:
        compiled = lowered.compile()
        self.flops[spec] = flops_of(lowered)
        self.selection_flops[spec] = 0.0 if plain is None else self.flops[spec] - flops_of(plain)
        self.compiled[spec] = compiled

    @property
    def compile_count(self) -> int:
        return len(self.compiled)
