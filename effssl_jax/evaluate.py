"""Weighted kNN evaluation on frozen backbone features (Wu et al. 2018, as in the SSL literature).

One implementation serves the online kNN of the train loop and offline evaluation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from effssl_jax import augment


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_scores(train_features, train_labels, query, k: int, temperature: float, num_classes: int):
    sim = query @ train_features.T  # cosine similarity of L2-normalised features
    top_sim, top_idx = jax.lax.top_k(sim, k)
    weights = jnp.exp(top_sim / temperature)
    votes = jax.nn.one_hot(train_labels[top_idx], num_classes) * weights[..., None]
    return votes.sum(axis=1)  # [Q, num_classes]


def knn_classify(train_features, train_labels, query_features, k: int = 200,
                 temperature: float = 0.1, num_classes: int | None = None,
                 chunk: int = 1024) -> np.ndarray:
    """Class scores of each query from its k most cosine-similar training features, each vote
    weighted by exp(similarity / temperature). Features must be L2-normalised. Returns [Q, C]."""
    train_labels = np.asarray(train_labels)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_labels))
    tf, tl = jnp.asarray(train_features), jnp.asarray(train_labels)
    out = [np.asarray(_knn_scores(tf, tl, jnp.asarray(query_features[i:i + chunk]), k,
                                  temperature, num_classes))
           for i in range(0, len(query_features), chunk)]
    return np.concatenate(out)


def knn_accuracy(train_features, train_labels, query_features, query_labels, **kw) -> float:
    scores = knn_classify(train_features, train_labels, query_features, **kw)
    return float(np.mean(scores.argmax(-1) == np.asarray(query_labels)))


def make_feature_fn(net, mesh, resolution: int, crop_fraction: float, dtype):
    """jitted (variables, uint8 images [B,H,W,3]) -> L2-normalised backbone features [B, D],
    batch sharded over the mesh's data axis."""
    def features(variables, images):
        x = augment.normalize(augment.center_resize(images, resolution, crop_fraction))
        f = net.apply(variables, x.astype(dtype), method=net.features).astype(jnp.float32)
        return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)

    return jax.jit(features, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))),
                   out_shardings=NamedSharding(mesh, P()))


def extract_features(feature_fn, variables, images: np.ndarray, batch_size: int, mesh) -> np.ndarray:
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
