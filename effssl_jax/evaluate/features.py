"""Frozen-backbone features for evaluation: eval-mode batch norm, batch sharded over the mesh's
data axis; from arrays in memory or streamed from a split batch by batch. The images are the
host's evaluation crops (data/folder.py's CenterCrop), already at the evaluation resolution."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import augment
from effssl_jax.methods.base import l2_normalize


def make_feature_fn(net, mesh, dtype, normalize=True):
    """jitted (variables, uint8 evaluation crops [B, r, r, 3]) -> backbone features [B, D]
    (L2-normalised unless normalize=False), batch sharded over the mesh's data axis."""
    def features(variables, images):
        x = augment.normalize(augment.to_float(images))
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


def _rebatch(chunks, size: int):
    """(images, labels) chunks of any size -> chunks of exactly `size` (the last one shorter)."""
    images, labels, held = [], [], 0
    for im, lb in chunks:
        images.append(im)
        labels.append(lb)
        held += len(im)
        while held >= size:
            im_all, lb_all = np.concatenate(images), np.concatenate(labels)
            yield im_all[:size], lb_all[:size]
            images, labels, held = [im_all[size:]], [lb_all[size:]], held - size
    if held:
        yield np.concatenate(images), np.concatenate(labels)


def stream_features(feature_fn, variables, chunks, num_local: int, image_size: int,
                    batch_size: int, mesh) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D], labels [N]) of a split streamed as this host's (uint8 images, labels)
    chunks (`num_local` images in all), one global batch at a time, so that no more than a batch
    of images is held. Each host feeds its own share; every host gets every feature (in the
    order of the hosts' shares within each batch: kNN and probes do not depend on it)."""
    processes = jax.process_count()
    num_devices = mesh.devices.size
    batch_size = max(batch_size // num_devices, 1) * num_devices
    local = batch_size // processes
    steps = -(-num_local // local)
    if processes > 1:  # every host runs the same number of batches, the last ones padded
        steps = int(multihost_utils.process_allgather(np.int32(steps)).max())
    sharding = NamedSharding(mesh, P("data"))
    batches = _rebatch(chunks, local)
    features, labels, filled = None, np.empty(steps * batch_size, np.int32), 0
    for _ in range(steps):
        images, lb = next(batches, (None, np.zeros(0, np.int32)))
        valid = np.zeros(local, bool)
        valid[:len(lb)] = True
        padded = np.zeros((local, image_size, image_size, 3), np.uint8)
        padded_labels = np.full(local, -1, np.int32)
        if images is not None:
            padded[:len(images)], padded_labels[:len(lb)] = images, lb
        x = np.asarray(feature_fn(variables, jax.make_array_from_process_local_data(sharding,
                                                                                    padded)))
        if processes > 1:
            valid, padded_labels = (np.asarray(multihost_utils.process_allgather(a)).reshape(-1)
                                    for a in (valid, padded_labels))
        if features is None:  # one array for the split, filled in place
            features = np.empty((steps * batch_size, x.shape[1]), np.float32)
        kept = int(valid.sum())
        features[filled:filled + kept] = x[valid]
        labels[filled:filled + kept] = padded_labels[valid]
        filled += kept
    if features is None:
        return np.zeros((0, 0), np.float32), labels[:0]
    return features[:filled], labels[:filled]
