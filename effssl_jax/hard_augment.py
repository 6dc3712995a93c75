"""Hard Augment (Sec. 3.3): score all C(n,2) view pairs at low resolution, keep the hardest.

The selection pass runs the networks without gradients on the n views rendered at r_sel, scores
every pair with the method's own per-sample loss (`jax.vmap` over the pair index) and, per sample,
picks the pair with the largest loss; only that pair is rendered at the step's full resolution and
trained (train_step.render_selected).
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def pair_indices(num_views: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs (i < j) in lexicographic order: two int32 arrays of length C(n, 2)."""
    pairs = np.array(list(itertools.combinations(range(num_views), 2)), np.int32)
    return pairs[:, 0], pairs[:, 1]


def _take(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


def pair_losses(loss_fn, online, target, num_views: int):
    """online/target: pytrees whose leaves have a leading view axis [n, B, ...] (target may be
    None). loss_fn(online_a, online_b, target_a, target_b) -> [B]. Returns [C(n,2), B]."""
    first, second = (jnp.asarray(a) for a in pair_indices(num_views))

    def one_pair(p):
        ta = tb = None
        if target is not None:
            ta, tb = _take(target, first[p]), _take(target, second[p])
        return loss_fn(_take(online, first[p]), _take(online, second[p]), ta, tb)

    return jax.vmap(one_pair)(jnp.arange(first.shape[0]))


def hardest_pairs(losses, num_views: int):
    """losses [P, B] -> (view index a [B], view index b [B]) of each sample's largest loss."""
    first, second = pair_indices(num_views)
    best = jnp.argmax(losses, axis=0)
    return jnp.asarray(first)[best], jnp.asarray(second)[best]


def gather_views(views, index):
    """views [n, B, ...], index [B] -> [B, ...] with sample b taken from view index[b]."""
    return views[index, jnp.arange(views.shape[1])]
