"""Hard Augment (Sec. 3.3): of n views per image, train only the hardest pair.

1. The n views are rendered at the step's resolution r, as training renders them, and then
   interpolated down to r_sel (Algorithm 1): each scored view is its trained view, downsampled.
2. The small views pass through the online (and target) networks without gradients, and every
   candidate pair is scored with the method's own per-sample loss (a `jax.vmap` over the pair
   index); per sample, the pair with the largest loss is chosen. The candidates are all C(n, 2)
   pairs, or for a method whose two views follow different recipes (BYOL, DINO, MoCo v3: view v
   takes recipe v % 2) only the pairs of one view of each recipe (`cross_pairs`), as Hard View
   Selection scores them, so that the trained pair keeps the method's asymmetric recipe.
3. That pair, already rendered at r, is trained.
4. Optionally (Table 9) the unselected low-resolution views act as extra targets.

The scoring side r_sel is `hard_augment.r_sel` px, or by default `selection_side`'s rule: the
paper's fraction 64/224 of r, floored at 1.5 output strides of the backbone (a last feature map of
2 x 2 cells), where results/ha_selection_* measured the choice far better than chance.

Its cost relative to a training step is eq. 11 (`speed_factor`); rendering n views at r instead of
two adds the augmentation's cost, which eq. 11 leaves out and XLA's FLOP count includes.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from effssl_jax import augment
from effssl_jax.models import backbones

SELECTION_FRACTION = 64 / 224  # the paper's r_sel / r (Sec. 4, Tables 8 and 9)
SELECTION_FLOOR_STRIDES = 1.5  # the floor, in output strides of the backbone

PAIRINGS = ("auto", "all", "cross")


def cross_pairs(pairing: str, view_configs) -> bool:
    """hard_augment.pairs resolved for a method's two view recipes: 'cross' (one view of each
    recipe per candidate pair), 'all', or 'auto': cross exactly when the two recipes differ, where
    a pair of two views of one recipe would train a pair the method never trains (two solarized
    views, two unblurred ones) and all pairs otherwise (a symmetric recipe gains nothing from
    fewer candidates)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"hard_augment.pairs={pairing!r} is unknown; valid: {', '.join(PAIRINGS)}")
    return pairing == "cross" or (pairing == "auto" and view_configs[0] != view_configs[1])


def pair_indices(num_views: int, cross: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs as two int32 arrays (first, second). All unordered pairs (i < j) in
    lexicographic order, C(n, 2) of them; with `cross`, the pairs of one view of recipe 0 (even
    v) and one of recipe 1 (odd v), that of recipe 0 first, ceil(n/2) floor(n/2) of them."""
    if cross:
        pairs = [(i, j) for i in range(0, num_views, 2) for j in range(1, num_views, 2)]
    else:
        pairs = list(itertools.combinations(range(num_views), 2))
    pairs = np.array(pairs, np.int32)
    return pairs[:, 0], pairs[:, 1]


def _take(tree, index):
    return jax.tree.map(lambda x: x[index], tree)


def pair_losses(loss_fn, online, target, num_views: int, cross: bool = False):
    """online/target: pytrees whose leaves have a leading view axis [n, B, ...] (target may be
    None). loss_fn(online_a, online_b, target_a, target_b) -> [B]. Returns [P, B] over the
    candidate pairs `pair_indices(num_views, cross)`."""
    first, second = (jnp.asarray(a) for a in pair_indices(num_views, cross))

    def one_pair(p):
        ta = tb = None
        if target is not None:
            ta, tb = _take(target, first[p]), _take(target, second[p])
        return loss_fn(_take(online, first[p]), _take(online, second[p]), ta, tb)

    return jax.vmap(one_pair)(jnp.arange(first.shape[0]))


def hardest_pairs(losses, num_views: int, cross: bool = False):
    """losses [P, B] -> (view index a [B], view index b [B]) of each sample's largest loss."""
    first, second = pair_indices(num_views, cross)
    best = jnp.argmax(losses, axis=0)
    return jnp.asarray(first)[best], jnp.asarray(second)[best]


def gather_views(views, index):
    """views [n, B, ...], index [B] -> [B, ...] with sample b taken from view index[b]."""
    return views[index, jnp.arange(views.shape[1])]


def downsample(views, size: int):
    """Views [..., r, r, C] resized to [..., size, size, C] with torchvision's antialiased
    bilinear resize (augment.resize_weights): Algorithm 1's interpolation to r_sel."""
    r = views.shape[-2]
    weights = augment.resize_weights(0, r, size, r).astype(views.dtype)
    return jnp.einsum("ih,...hwc,jw->...ijc", weights, views, weights)


class Selection(flax.struct.PyTreeNode):
    """What the selection pass hands to the train step."""
    pair: jax.Array  # [2, B, r, r, 3]: the hardest pair of each sample at full resolution
    stats: dict  # ha_selected_loss, ha_mean_loss (logged)
    online: Any  # online outputs of the n views downsampled to r_sel [n, B, ...] (constants)
    target: Any  # target outputs of the same, or None
    unselected: jax.Array  # [n, B] bool: the views not in the chosen pair


def select(rng, images, magnitude, online_fn: Callable, target_fn: Callable | None,
           loss_fn: Callable, *, num_views: int, r_sel: int, resolution: int, view_configs,
           dtype, cross: bool = False) -> Selection:
    """The selection pass. online_fn / target_fn (None without a target network) map a view batch
    to network outputs; loss_fn(online_a, online_b, target_a, target_b) -> [B] is the method's
    per-sample pair loss; `cross`: only pairs of one view of each recipe (`pair_indices`).
    Nothing here is differentiated."""
    views = augment.render_views(rng, images, magnitude, resolution, view_configs, num_views,
                                 dtype)
    small = views if r_sel == resolution else downsample(views, r_sel)
    online = jax.vmap(online_fn)(small)
    target = None if target_fn is None else jax.vmap(target_fn)(small)
    losses = jax.lax.stop_gradient(pair_losses(loss_fn, online, target, num_views, cross))
    a, b = hardest_pairs(losses, num_views, cross)  # losses: [P, B]
    pair = jnp.stack([gather_views(views, index) for index in (a, b)])
    index = jnp.arange(num_views)[:, None]
    online, target = jax.lax.stop_gradient((online, target))
    return Selection(pair=pair, online=online, target=target,
                     stats={"ha_selected_loss": jnp.max(losses, 0).mean(),
                            "ha_mean_loss": losses.mean()},
                     unselected=(index != a) & (index != b))


def extra_target_loss(loss_fn, out_a, out_b, target_a, target_b, selection: Selection):
    """Table 9's variant: mean over the unselected views k of the pair losses of each trained
    view with k. k's outputs are constants, so they act only as targets. Returns [B]."""
    def against(k):
        ok = _take(selection.online, k)
        tk = None if selection.target is None else _take(selection.target, k)
        return 0.5 * (loss_fn(out_a, ok, target_a, tk) + loss_fn(out_b, ok, target_b, tk))

    n = selection.unselected.shape[0]
    losses = jax.vmap(against)(jnp.arange(n))  # [n, B]
    mask = selection.unselected
    return (losses * mask).sum(0) / jnp.maximum(mask.sum(0), 1)


# The scoring side and its cost (eq. 11), pure Python.

def selection_side(config, resolution: int) -> int:
    """The side the views of a step at `resolution` are scored at: `hard_augment.r_sel` px when
    set (> 0), else the rule max(64/224 r, 1.5 output strides), rounded up to a side the backbone
    takes; never above `resolution`.

    Why (results/ha_selection_r50_224, results/ha_selection_cifar16): the pair chosen at r_sel
    agrees with the full-resolution hardest pair far better than chance once the last feature map
    has 2 x 2 cells, and poorly at one cell, whatever the fraction: 40-64 px of 224 on ResNet-50
    (stride 32) against 28 px, 12 px of 16 with the CIFAR stem (stride 8) against 8 px and the
    paper's fraction, 5 px. The fraction alone starves small scales; the floor alone overpays at
    large r."""
    h = config.hard_augment
    if h.r_sel > 0:
        return min(h.r_sel, resolution)
    multiple = backbones.resolution_multiple(config.model)
    floor = SELECTION_FLOOR_STRIDES * backbones.output_stride(config.model)
    side = max(round(SELECTION_FRACTION * resolution), math.ceil(floor))
    return min(-(-side // multiple) * multiple, resolution)


def speed_factor(resolution: int, r_sel: int, num_views: int, cost_ratio: float = 6.0) -> float:
    """Eq. 11: M_ha = r^2 C / (r^2 C + m r_sel^2); 1 - M_ha is the selection overhead.
    C is the cost of a training iteration over one forward pass (6 in the paper)."""
    return resolution ** 2 * cost_ratio / (resolution ** 2 * cost_ratio + num_views * r_sel ** 2)


def overhead_eq11(steps_by_resolution: dict, side_at: Callable[[int], int],
                  num_views: int) -> float:
    """Eq. 11's 1 - M_ha averaged over the steps run at each resolution r, scored at side_at(r)."""
    total = sum(steps_by_resolution.values())
    if not total:
        return 0.0
    return sum(n * (1 - speed_factor(int(r), side_at(int(r)), num_views))
               for r, n in steps_by_resolution.items()) / total
