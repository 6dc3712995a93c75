"""Which augmentation each view of a method gets: `augment.recipe` picks the method's own recipe
('method', each method module's `official_views`, with its source) or the single setting of the
paper under reproduction ('paper', PAPER_VIEW below); `augment.crop_scale` and
`augment.blur_prob`, when set, override the chosen recipe on both views, and
`augment.colour_rounding` sets how every view's pixels are rounded between ops (float, or 8 bits
as torchvision on uint8 tensors: augment.COLOUR_ROUNDINGS).

Every recipe here is a pair of `augment.ViewConfig`s, view 1 and view 2 (`render_views` cycles
them for more views); `local_view_configs` gives the local crops' pair (augment.local_crops,
multicrop.py), and DINO's global views follow whether there are local crops. Two differences
from the official pipelines hold for every recipe: the crop is resized with antialiased bilinear
interpolation (DINO and SimCLR resize bicubically), and the flip comes last (DINO and SimCLR
flip first; a flip commutes with the colour ops and the symmetric blur, so the views'
distribution is the same).
"""
from __future__ import annotations

import dataclasses

from effssl_jax.augment import COLOUR_ROUNDINGS, ViewConfig
from effssl_jax.errors import ConfigError
from effssl_jax.methods import byol, dino, mocov2plus, mocov3, simclr, simsiam

RECIPES = ("method", "paper")

# The paper's one augmentation setting for every method (Sec. 4.2), as this library reproduces it:
# SimSiam's recipe (simsiam.official_views), which every method used before each got its own.
PAPER_VIEW = ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
                        jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                        gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
# Methods whose paper setting keeps BYOL's asymmetric blur / solarisation on top of PAPER_VIEW.
PAPER_ASYMMETRIC = ("byol", "dino", "mocov3")

OFFICIAL = {"simsiam": simsiam.official_views, "byol": byol.official_views,
            "simclr": simclr.official_views, "mocov2plus": mocov2plus.official_views,
            "dino": dino.official_views, "mocov3": mocov3.official_views}
# The recipes whose global views change when local crops are on (augment.local_crops.count > 0):
# DINO's global crop scale (dino.official_views).
OFFICIAL_WITH_LOCAL_CROPS = {"dino": lambda: dino.official_views(local_crops=True)}
# The methods with a local-crop transform of their own (the others: `local_view_configs`).
LOCAL_VIEW = {"dino": dino.local_view}


def paper_views(method: str) -> tuple[ViewConfig, ViewConfig]:
    """The paper's setting for `method`: PAPER_VIEW on both views, with BYOL's asymmetric blur and
    solarisation (byol.asymmetric_views) for the methods that have it (PAPER_ASYMMETRIC)."""
    if method in PAPER_ASYMMETRIC:
        return byol.asymmetric_views(PAPER_VIEW)
    return PAPER_VIEW, PAPER_VIEW


def with_overrides(views, crop_scale=(), blur_prob: float = -1.0,
                   colour_rounding: str = "") -> tuple[ViewConfig, ViewConfig]:
    """`views` with the configured overrides on both views: crop_scale unless (), blur_prob
    unless negative and colour_rounding unless '' (the placeholders meaning the views' own
    value)."""
    changes = {}
    if len(crop_scale):
        changes["crop_scale"] = tuple(float(s) for s in crop_scale)
    if blur_prob >= 0:
        changes["blur_prob"] = float(blur_prob)
    if colour_rounding:
        changes["colour_rounding"] = str(colour_rounding)
    return tuple(dataclasses.replace(v, **changes) for v in views)


def view_configs(method: str, augment) -> tuple[ViewConfig, ViewConfig]:
    """The two views' augmentation of `method` under config.augment (recipe, crop_scale,
    blur_prob, colour_rounding); ConfigError for an unknown method, recipe or rounding."""
    if method not in OFFICIAL:
        raise ConfigError(f"method={method!r} is unknown; valid: {', '.join(OFFICIAL)}")
    if augment.recipe not in RECIPES:
        raise ConfigError(f"augment.recipe={augment.recipe!r} is unknown; valid: "
                          f"{', '.join(RECIPES)} (the method's own or the paper's)")
    if augment.colour_rounding not in COLOUR_ROUNDINGS:
        raise ConfigError(f"augment.colour_rounding={augment.colour_rounding!r} is unknown; "
                          f"valid: {', '.join(COLOUR_ROUNDINGS)}")
    official = OFFICIAL_WITH_LOCAL_CROPS if augment.local_crops.count > 0 else OFFICIAL
    views = official.get(method, OFFICIAL[method])() if augment.recipe == "method" else (
        paper_views(method))
    return with_overrides(views, augment.crop_scale, augment.blur_prob, augment.colour_rounding)


def local_view_configs(method: str, augment, views) -> tuple[ViewConfig, ViewConfig]:
    """The local crops' augmentation (augment.local_crops, multicrop.py) of `method`, whose global
    views are `views` (view_configs'): local crop k uses the k % 2-th. With recipe 'method' and a
    local transform of the method's own (LOCAL_VIEW: DINO's), that transform, derived from the
    first global view; otherwise each global view with the local crop scale, as SwAV's multi-crop
    changes only the crops' size and scale (facebookresearch/swav src/multicropdataset.py:37-52,
    commit 06b1b7c: one colour transform for every crop). augment.blur_prob, when set, overrides
    the local crops' blur too."""
    scale = tuple(float(s) for s in augment.local_crops.scale)
    if augment.recipe == "method" and method in LOCAL_VIEW:
        local = LOCAL_VIEW[method](views[0], scale)
        local_views = (local, local)
    else:
        local_views = tuple(dataclasses.replace(v, crop_scale=scale) for v in views)
    return with_overrides(local_views, blur_prob=augment.blur_prob)
