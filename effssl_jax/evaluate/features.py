"""Frozen-backbone features for evaluation: eval-mode batch norm, centre crop, batch sharded over
the mesh's data axis."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import augment
from effssl_jax.methods.base import l2_normalize


def make_feature_fn(net, mesh, resolution: int, crop_fraction: float, dtype, normalize=True):
    """jitted (variables, uint8 images [B,H,W,3]) -> backbone features [B, D] of the centre crop
    (L2-normalised unless normalize=False), batch sharded over the mesh's data axis."""
    def features(variables, images):
        x = augment.normalize(augment.center_resize(images, resolution, crop_fraction))
        f = net.apply(variables, x.astype(dtype), method=net.features).astype(jnp.float32)
        return l2_normalize(f) if normalize else f

    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(features, in_shardings=(replicated, batch), out_shardings=replicated)


def extract_features(feature_fn, variables, images: np.ndarray, batch_size: int,
                     mesh) -> np.ndarray:
    """Features of all images; the last batch is padded to a multiple of the device count."""
    num_devices = mesh.devices.size
    batch_size = max(batch_size // num_devices, 1) * num_devices
    sharding = NamedSharding(mesh, P("data"))
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        # Every host holds all images; each device takes its slice (works across hosts too).
        batch = jax.make_array_from_callback(chunk.shape, sharding, lambda index: chunk[index])
        out.append(np.asarray(feature_fn(variables, batch))[:batch_size - pad])
    return np.concatenate(out)
