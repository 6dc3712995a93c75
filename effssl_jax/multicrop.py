"""Multi-crop (SwAV, Caron et al. 2020; DINO, Caron et al. 2021): beside the two global views,
`augment.local_crops.count` low-resolution local crops of each whole image.

What a local crop is: a view drawn from the same whole image as the global views (the batch's
`canvas.Images`), with the local crop area scale (DINO's local_crops_scale, (0.05, 0.4)) and the
method's local-crop augmentation (methods/recipes.py `local_view_configs`: DINO's own local
transform, main_dino.py:449-456; for the other methods their global views' augmentation, as SwAV
applies one colour transform to every crop), rendered on the device by `augment.render_views`.
Crop k gets the key fold_in(fold_in(rng, LOCAL_STREAM), k): a stream of its own, so the local
crops never reuse the global views' keys fold_in(rng, v) (nor Hard Augment's n views').

Resolution: `resolution` px at progressive.r_max (DINO: 96 beside 224). Under Super Progressive
Learning the local side follows the step's resolution r in proportion, round(resolution r /
r_max), at least MIN_SIDE px and, for a ViT, a whole number of patches (`local_resolution`). It is
a function of the bucket alone, so it is static in the compiled step (StepSpec.local_crops): still
one compile per bucket.

How the train step (step.py) uses them:
* a method with `multicrop_loss` (DINO) trains its student on every crop: the local crops go
  through the student, with gradients, in one forward of the N crops together (DINO's
  MultiCropWrapper forwards the crops of one resolution as one batch, utils.py:594-629; the
  global views keep their separate per-view forwards), the teacher sees only the two global
  views, and the method's loss compares them all (DINO's DINOLoss);
* the pair-loss methods (SimSiam, BYOL, SimCLR, MoCo v2+, MoCo v3) train on the global pair and
  use the local crops as extra targets (`extra_target_loss`): Table 9's last row, where, as the
  paper describes SwAV's multi-crop (Sec. 4.4, "Multi-Crop Comparison"), "only high resolution
  crops are used for back-propagation and low resolution ones are used only as extra comparison
  targets". The local crops' online (and target) outputs are computed without gradients, each
  crop its own batch-norm batch, and their BN statistics are discarded, as Hard Augment's scoring
  pass treats its views (hard_augment.py).

Cost: costs.PaperCost counts the local crops' forwards (and DINO's backward through them); XLA's
FLOP count of the step includes them by itself.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from effssl_jax import augment
from effssl_jax.augment import ViewConfig
from effssl_jax.models import backbones

MIN_SIDE = 4  # the smallest local crop side under Super Progressive Learning, in px
# The local crops' key stream: crop k's key is fold_in(fold_in(rng, LOCAL_STREAM), k). Global
# views use fold_in(rng, v) with v < the number of views, far below this.
LOCAL_STREAM = 0x10CA1


@dataclasses.dataclass(frozen=True)
class LocalCrops:
    """The static part of a step's local crops: how many, their side, their augmentation
    (crop k uses view_configs[k % 2], as augment.render_views cycles them)."""
    count: int
    resolution: int
    view_configs: tuple[ViewConfig, ViewConfig]


def local_resolution(resolution_at_max: int, resolution: int, r_max: int,
                     multiple: int = 1) -> int:
    """The local crops' side when the global views are at `resolution`: `resolution_at_max`
    scaled by resolution / r_max and rounded, at least MIN_SIDE px, and the nearest multiple of
    `multiple` (a ViT's patch size), at least one."""
    side = max(round(resolution_at_max * resolution / r_max), MIN_SIDE)
    if multiple > 1:
        side = max(round(side / multiple) * multiple, multiple)
    return side


def at_resolution(config, resolution: int, view_configs) -> LocalCrops | None:
    """The local crops of a run's step at `resolution` (config.augment.local_crops, the
    backbone's resolution_multiple), augmented as `view_configs` (recipes.local_view_configs);
    None when the run has none."""
    local = config.augment.local_crops
    if local.count <= 0:
        return None
    side = local_resolution(local.resolution, resolution, config.progressive.r_max,
                            backbones.resolution_multiple(config.model))
    return LocalCrops(int(local.count), side, tuple(view_configs))


def local_rng(rng):
    """The key from which crop k's key is fold_in(., k)."""
    return jax.random.fold_in(rng, LOCAL_STREAM)


def render(rng, images, magnitude, local: LocalCrops, dtype):
    """The local crops of a batch of whole images: [count, B, side, side, 3], normalised. `rng`
    is the step's key, the one the global views are rendered from."""
    return augment.render_views(local_rng(rng), images, magnitude, local.resolution,
                                local.view_configs, local.count, dtype)


def flatten(crops):
    """[N, B, ...] -> [B N, ...]: the crops as one batch (DINO's torch.cat of the crops, utils.py:
    620), sample-major so that the merged batch stays split on the mesh's data axis as B is
    (crop-major, a device's share would be spread over every crop)."""
    return jnp.swapaxes(crops, 0, 1).reshape(-1, *crops.shape[2:])


def split(outputs, count: int) -> list:
    """Outputs of `flatten`ed crops -> the list of the `count` crops' outputs (DINO's .chunk)."""
    stacked = jax.tree.map(lambda x: x.reshape(-1, count, *x.shape[1:]), outputs)
    return [jax.tree.map(lambda x, k=k: x[:, k], stacked) for k in range(count)]


def extra_targets(online_fn: Callable, target_fn: Callable | None, crops):
    """(online, target) outputs of the crops [N, B, ...] as constants, each leaf [N, B, ...];
    target is None without a target network. online_fn / target_fn map one crop's batch to
    outputs (a `jax.vmap` over the crops: each crop is its own batch-norm batch)."""
    online = jax.vmap(online_fn)(crops)
    target = None if target_fn is None else jax.vmap(target_fn)(crops)
    return jax.lax.stop_gradient((online, target))


def extra_target_loss(loss_fn: Callable, out_a, out_b, target_a, target_b, online, target):
    """Table 9's multi-crop row: the mean over the local crops k of 0.5 (L(a, k) + L(b, k)), L the
    method's pair loss loss_fn(online_a, online_b, target_a, target_b) -> [B], with k's outputs
    (`extra_targets`, leaves [N, B, ...]) as constants. As hard_augment.extra_target_loss, with
    every local crop a target. Returns [B]."""
    take = lambda tree, k: jax.tree.map(lambda x: x[k], tree)

    def against(k):
        ok = take(online, k)
        tk = None if target is None else take(target, k)
        return 0.5 * (loss_fn(out_a, ok, target_a, tk) + loss_fn(out_b, ok, target_b, tk))

    count = jax.tree.leaves(online)[0].shape[0]
    return jnp.mean(jax.vmap(against)(jnp.arange(count)), axis=0)


def trains_student(method) -> bool:
    """Whether `method` trains on the local crops (it has `multicrop_loss`: DINO) rather than
    using them as extra targets."""
    return hasattr(method, "multicrop_loss")
