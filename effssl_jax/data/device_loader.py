"""The device-resident loader (`--config.data.loader=device`): a split decoded into memory is
uploaded once, sharded over the mesh's `data` axis, and each step's batch is gathered on the
devices by index, so a step costs the host one upload of its batch indices (4 bytes an image).
This is what keeps a GPU fed on datasets that fit in its memory (docs/data.md); the paper
used DALI for the same reason.

Same order (data/order.py), same iterator state and same batches as the memory loader: the gather
of step t returns exactly the global array that the memory loader's host batches of step t make.

The gather is a shard_map: every device takes, from its own shard of the dataset, the batch rows
it holds (zeros elsewhere), and a reduce-scatter over `data` sums these into each device's slice
of the batch. Device memory: the dataset / devices, plus one global batch per device in flight.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax.data.canvas import Images
from effssl_jax.data.errors import DataError
from effssl_jax.data.memory_loader import MemoryLoader
from effssl_jax.data.order import Sampler

# The dataset's share of a device's memory beyond which the loader refuses it (room for the model,
# its activations and XLA's buffers).
MAX_MEMORY_FRACTION = 0.5


def _bytes_limit(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return (stats or {}).get("bytes_limit")


def upload(array: np.ndarray, mesh: Mesh, fill=0, what: str = "the pretraining split"):
    """`array` [N, ...] as one global array sharded on its first axis over `data`, padded with
    `fill` rows to a multiple of the axis size; each process uploads only its devices' rows. More
    than MAX_MEMORY_FRACTION of a device's memory is refused in one line."""
    devices = mesh.shape["data"]
    rows = -(-len(array) // devices)  # a device's
    per_device = rows * int(np.prod(array.shape[1:])) * array.itemsize
    limit = _bytes_limit(jax.local_devices()[0])
    if limit and per_device > MAX_MEMORY_FRACTION * limit:
        raise DataError(f"{what} needs {per_device / 2**30:.2f} GiB per device, more than "
                        f"{MAX_MEMORY_FRACTION:.0%} of the {limit / 2**30:.1f} GiB a device has; "
                        "use --config.data.loader=memory or grain, a smaller "
                        "--config.image_size, or more devices")

    def shard(index):
        start, stop, _ = index[0].indices(rows * devices)
        block = array[start:min(stop, len(array))]
        return np.pad(block, [(0, stop - start - len(block))] + [(0, 0)] * (array.ndim - 1),
                      constant_values=fill)

    return jax.make_array_from_callback((rows * devices,) + array.shape[1:],
                                        NamedSharding(mesh, P("data")), shard)


@functools.lru_cache(maxsize=None)
def _gather_fn(mesh: Mesh):
    """jit(data [N, ...] sharded on `data`, indices [B] replicated) -> data[indices] sharded on
    `data`, without moving the dataset: a masked local gather and a reduce-scatter."""

    def local(shard, indices):
        rows = shard.shape[0]
        first = jax.lax.axis_index("data") * rows
        mine = (indices >= first) & (indices < first + rows)
        picked = jnp.take(shard, jnp.where(mine, indices - first, 0), axis=0)
        picked = jnp.where(mine.reshape((-1,) + (1,) * (shard.ndim - 1)), picked, 0)
        # Exactly one device holds each row, so the sum is that row; summed in int32 (uint8
        # all-reduces are not supported on every backend) and cast back.
        summed = jax.lax.psum_scatter(picked.astype(jnp.int32), "data", tiled=True)
        return summed.astype(shard.dtype)

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"))
    return jax.jit(mapped, out_shardings=NamedSharding(mesh, P("data")))


class DeviceLoader(MemoryLoader):
    """Iterates (step, global canvas.Images on the devices) for steps start..total_steps-1 of
    `images` (all of a split's), uploaded to `mesh` once. The sampler's global batch indices
    (the same on every process) are gathered on the devices; its host slice is not used, because
    the gathered array already gives each process its devices' rows."""

    def __init__(self, images: Images, sampler: Sampler, total_steps: int, mesh: Mesh,
                 prefetch: int = 2):
        super().__init__(images, sampler, total_steps, prefetch)
        self._global = Sampler(sampler.num_examples, sampler.batch_size, sampler.seed)
        self._indices = NamedSharding(mesh, P())
        self._gather = _gather_fn(mesh)
        self.images = Images(upload(images.pixels, mesh), upload(images.sizes, mesh))

    def _batch(self, step: int) -> Images:
        indices = self._global.indices(step).astype(np.int32)
        indices = jax.make_array_from_callback(indices.shape, self._indices, lambda i: indices[i])
        return jax.tree.map(lambda a: self._gather(a, indices), self.images)
