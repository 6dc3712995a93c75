"""Each method's augmentation recipe against its official repository's values (written out here
with the file and line they come from), the paper's single setting (`augment.recipe=paper`, the
library's setting before per-method recipes), the `augment.crop_scale` / `augment.blur_prob`
overrides, and their validation."""
import dataclasses

import jax.numpy as jnp
import pytest

from effssl_jax import config_schema, experiment
from effssl_jax.augment import ViewConfig
from effssl_jax.errors import ConfigError
from effssl_jax.methods import METHODS, recipes

# (crop_scale, (brightness, contrast, saturation, hue), jitter_prob, gray_prob, blur_sigma,
#  flip_prob, (blur_prob, solarize_prob) of view 1, the same of view 2)
OFFICIAL = {
    # facebookresearch/simsiam main_simsiam.py:229-236 (a7bc177); loader.py:23-32 (sigma)
    "simsiam": ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, (0.1, 2.0), 0.5, (0.5, 0.0),
                (0.5, 0.0)),
    # facebookresearch/moco main_moco.py:326-335 (7397dfe, --aug-plus); loader.py:24-33
    "mocov2plus": ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, (0.1, 2.0), 0.5, (0.5, 0.0),
                   (0.5, 0.0)),
    # google-research/simclr data_util.py (383d414): :322 area_range, :74-77 jitter x strength 1
    # (run.py:239-241), :392-393 p 0.8 / gray 0.2, :411 sigma, :417 blur p 0.5, :471-472 flip
    "simclr": ((0.08, 1.0), (0.8, 0.8, 0.8, 0.2), 0.8, 0.2, (0.1, 2.0), 0.5, (0.5, 0.0),
               (0.5, 0.0)),
    # deepmind/deepmind-research byol/utils/augmentations.py:27-66 (d8df415); dataset.py:210
    "byol": ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.1, 2.0), 0.5, (1.0, 0.0),
             (0.1, 0.2)),
    # facebookresearch/moco-v3 main_moco.py:117 (crop-min), :261-285 (c349e6e)
    "mocov3": ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.1, 2.0), 0.5, (1.0, 0.0),
               (0.1, 0.2)),
    # facebookresearch/dino main_dino.py:419-448 (7c446df); crop 0.14 - 1: main_dino.py:110-114,
    # the advice without local crops (the default 0.4 - 1 of :108 goes with them)
    "dino": ((0.14, 1.0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.1, 2.0), 0.5, (1.0, 0.0),
             (0.1, 0.2)),
}
# The library's setting before per-method recipes: ViewConfig's defaults, with BYOL's
# asymmetric blur / solarisation for BYOL, DINO and MoCo v3.
PAPER = ViewConfig(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
                   jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                   gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), solarize_prob=0.0)
PAPER_PROBS = {"byol": ((1.0, 0.0), (0.1, 0.2)), "dino": ((1.0, 0.0), (0.1, 0.2)),
               "mocov3": ((1.0, 0.0), (0.1, 0.2))}


def config(method, **augment):
    c = config_schema.default_config()
    c.method = method
    c.augment.update(augment)
    return c


def built_views(c):
    """The views of the method the experiment builds from config `c` (tiny backbone)."""
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    return experiment.build_method(c, jnp.float32, 1, 1).view_configs


def summary(v: ViewConfig):
    return (v.crop_scale, (v.brightness, v.contrast, v.saturation, v.hue), v.jitter_prob,
            v.gray_prob, v.blur_sigma, v.flip_prob)


@pytest.mark.parametrize("method", sorted(OFFICIAL))
def test_default_is_the_methods_official_recipe(method):
    scale, jitter, p_jitter, p_gray, sigma, p_flip, probs1, probs2 = OFFICIAL[method]
    v1, v2 = built_views(config(method))
    for v, probs in ((v1, probs1), (v2, probs2)):
        assert summary(v) == (scale, jitter, p_jitter, p_gray, sigma, p_flip)
        assert (v.blur_prob, v.solarize_prob) == probs
        assert v.crop_ratio == (3 / 4, 4 / 3)
    assert (v1, v2) == recipes.OFFICIAL[method]()


def test_every_method_has_a_recipe():
    assert set(OFFICIAL) == set(METHODS) == set(recipes.OFFICIAL)


@pytest.mark.parametrize("method", sorted(OFFICIAL))
def test_paper_recipe_is_the_former_setting(method):
    v1, v2 = built_views(config(method, recipe="paper"))
    probs = PAPER_PROBS.get(method, ((0.5, 0.0), (0.5, 0.0)))
    for v, (blur, solarize) in zip((v1, v2), probs):
        assert v == dataclasses.replace(PAPER, blur_prob=blur, solarize_prob=solarize)
    if method not in PAPER_PROBS:
        assert v1 == v2 == ViewConfig()  # exactly what every such method got before


@pytest.mark.parametrize("recipe", recipes.RECIPES)
@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
def test_overrides_set_both_views(method, recipe):
    base = built_views(config(method, recipe=recipe))
    scaled = built_views(config(method, recipe=recipe, crop_scale=(0.3, 0.9)))
    assert [v.crop_scale for v in scaled] == [(0.3, 0.9)] * 2
    assert [dataclasses.replace(v, crop_scale=b.crop_scale) for v, b in zip(scaled, base)] == list(
        base)
    unblurred = built_views(config(method, recipe=recipe, blur_prob=0.0))
    assert [v.blur_prob for v in unblurred] == [0.0, 0.0]
    assert [dataclasses.replace(v, blur_prob=b.blur_prob) for v, b in zip(unblurred, base)] == list(
        base)


def test_defaults_are_placeholders():
    c = config_schema.default_config()
    assert (c.augment.recipe, tuple(c.augment.crop_scale), c.augment.blur_prob) == (
        "method", (), -1.0)
    config_schema.validate(c)


@pytest.mark.parametrize("augment, named", [
    ({"recipe": "simclr"}, "augment.recipe='simclr' is unknown; valid: method, paper"),
    ({"crop_scale": (0.5,)}, "augment.crop_scale=(0.5,) must be (min, max)"),
    ({"crop_scale": (0.9, 0.3)}, "augment.crop_scale=(0.9, 0.3) must be (min, max)"),
    ({"crop_scale": (0.0, 1.0)}, "augment.crop_scale=(0.0, 1.0) must be (min, max)"),
    ({"blur_prob": 1.5}, "augment.blur_prob=1.5 must lie in [0, 1], or be -1"),
    ({"blur_prob": -0.5}, "augment.blur_prob=-0.5 must lie in [0, 1], or be -1"),
])
def test_bad_values_get_a_one_line_error(augment, named):
    with pytest.raises(ConfigError) as err:
        config_schema.validate(config("simsiam", **augment))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_unknown_recipe_fails_without_validation_too():
    with pytest.raises(ConfigError, match="augment.recipe='Paper' is unknown"):
        built_views(config("byol", recipe="Paper"))
