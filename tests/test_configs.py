"""Every recipe in configs/ on synthetic data with tiny overrides: the efficient (f1clr) recipes,
which switch on everything a baseline uses plus F1-CLR, Super Progressive Learning and Hard
Augment, train a few steps (finite loss, checkpoint written, summary complete); the baselines
build their plan and method."""
import json
import math
import os

import jax
import jax.numpy as jnp
import pytest

from effssl_jax import config_schema, experiment, progressive, train
from effssl_jax import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("simsiam", "byol", "simclr", "mocov2plus", "dino")


def tiny(config):
    c = config
    c.dataset, c.synthetic_train_size, c.synthetic_test_size = "synthetic", 32, 16
    c.batch_size, c.epochs = 16, 2
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    c.model.conv_impl = "xla"  # compiles faster (conftest.py)
    # One bucket: each recipe's step compiles once (test_launch.py compiles SP's buckets).
    c.progressive.r_max, c.progressive.r_min, c.progressive.bucket_step = 16, 16, 8
    c.augment.local_crops.resolution = 8  # DINO's recipes: 8 local crops, 96 px at r_max 224
    c.optim.warmup_epochs = min(c.optim.warmup_epochs, 1)
    c.hard_augment.num_views, c.hard_augment.r_sel = 3, 8
    c.simsiam.update(proj_dim=16, pred_hidden=8)
    c.byol.update(proj_hidden=32, proj_dim=16, pred_hidden=32)
    c.simclr.update(proj_hidden=32, proj_dim=16)
    c.mocov2plus.update(proj_hidden=32, proj_dim=16, queue_size=32)
    c.dino.update(proj_hidden=32, bottleneck_dim=16, num_prototypes=64)
    c.eval.update(every_epochs=2, at_init=False, knn_k=5)
    c.checkpoint_every_steps, c.progress_bar = 2, False
    return c


def load(recipe):
    return tiny(config_schema.from_recipe(os.path.join(ROOT, "configs", f"{recipe}.py")))


@pytest.mark.parametrize("method", METHODS)
def test_baseline_recipe_builds(method):
    config = load(f"{method}_baseline")
    assert config.optim.schedule == "cosine" and not config.hard_augment.enabled
    plan = plan_lib.make_plan(config, config.synthetic_train_size)
    assert plan.resolutions == (16,) and plan.total_steps == 4
    built = experiment.build_method(config, jnp.float32, plan.steps_per_epoch, plan.total_steps)
    shapes = jax.eval_shape(lambda: built.net.init(jax.random.key(0),
                                                   jnp.zeros((2, 16, 16, 3)), train=False))
    assert "backbone" in shapes["params"]


@pytest.mark.parametrize("recipe", [f"{m}_f1clr" for m in METHODS])
def test_recipe_trains(recipe, tmp_path):
    config = load(recipe)
    summary = train.run(config, str(tmp_path))
    assert summary["steps"] == 4 and summary["method"] == recipe.split("_")[0]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert os.path.isdir(tmp_path / "checkpoints" / "4")
    assert 0.0 <= summary["knn_top1"] <= 1.0 and summary["total_pflops"] > 0
    assert summary["compiled_steps"] == 1  # SP's one bucket, compiled once
    assert summary["selection_pflops"] > 0  # HA
    assert any("ema_tau" in r for r in rows) == (config.method in ("byol", "mocov2plus", "dino"))


def test_quickstart_runs_a_recipe_on_its_budget():
    path = os.path.join(ROOT, "configs", "quickstart.py")
    config = config_schema.from_recipe(path + ":byol_f1clr")
    assert config.method == "byol" and config.optim.schedule == "f1clr"
    # Without negatives: the measured 40-epoch budget at batch 32, lr 0.05; the warm-up keeps the
    # recipe's fraction of training (80 of 480 epochs).
    assert (config.batch_size, config.epochs, config.optim.lr) == (32, 40, 0.05)
    assert config.optim.warmup_epochs == pytest.approx(80 / 480 * 40)
    plan = plan_lib.make_plan(config, config.synthetic_train_size)
    assert plan.resolutions == (16, 24, 32) and plan.resolution(0) == 32
    assert config.hard_augment.enabled and config.hard_augment.r_sel == 16
    assert config.model.width == 32
    simclr = config_schema.from_recipe(path + ":simclr_f1clr")  # negatives: the quickstart budget
    assert (simclr.batch_size, simclr.epochs, simclr.optim.lr) == (128, 20, 0.2)


@pytest.mark.parametrize("scale", ["imagenet32", "cifar16"])
def test_imagenette_ablation_keeps_the_papers_ratios(scale):
    """Table 3 scaled down: efficient rows run 0.6 E epochs with t_w = 0.1 E, SP spans 6
    resolutions up to r_max with eq. 9's M near the paper's 1.60, HA scores at 64/224 r_max."""
    path = os.path.join(ROOT, "configs", "imagenette_ablation.py")
    base = config_schema.from_recipe(f"{path}:ca,20,{scale}")
    full = config_schema.from_recipe(f"{path}:f1clr+sp+ha,20,{scale}")
    assert (base.epochs, full.epochs, full.optim.warmup_epochs) == (20, 12, pytest.approx(2.0))
    assert base.model.cifar_stem == full.model.cifar_stem == (scale == "cifar16")
    plan = plan_lib.make_plan(full, 9469)
    assert len(plan.resolutions) == 6 and max(plan.resolutions) == full.progressive.r_max
    assert progressive.predicted_speedup(list(plan.stages), plan.r_max) == pytest.approx(
        1.67, abs=0.01)
    assert full.hard_augment.r_sel == round(64 / 224 * full.progressive.r_max)
    with pytest.raises(ValueError, match="unknown scale"):
        config_schema.from_recipe(f"{path}:ca,20,cifar32")


def test_imagenette_vit_scales_the_vit_recipe():
    """The scaled ViT runs: ViT-Tiny with 4 px patches at r_max 32 (8 x 8 patches, as 224 px is
    14 x 14 of 16), SP in six buckets of whole patches from 12 px, the efficient rows at 0.6 E
    with the baseline's warm-up as t_w and beta1 anti-phased; the config is valid."""
    path = os.path.join(ROOT, "configs", "imagenette_vit.py")
    base = config_schema.from_recipe(f"{path}:ca,5")
    fast = config_schema.from_recipe(f"{path}:f1clr+sp,5")
    for c in (base, fast):
        config_schema.validate(c)
        assert (c.method, c.model.arch, c.model.patch_size, c.optim.optimizer) == (
            "mocov3", "vit_tiny", 4, "adamw")
    assert (base.epochs, fast.epochs) == (5, 3)
    assert base.optim.warmup_epochs == fast.optim.warmup_epochs == pytest.approx(0.5)
    assert (base.optim.schedule, fast.optim.schedule) == ("warmup_cosine", "f1clr")
    assert not fast.hard_augment.enabled
    assert plan_lib.make_plan(base, 9469).resolutions == (32,)
    plan = plan_lib.make_plan(fast, 9469)
    assert plan.resolutions == (12, 16, 20, 24, 28, 32) and plan.resolution(0) == 32
    assert float(plan.momentum(plan.warmup_steps)) == pytest.approx(0.85)
    assert config_schema.from_recipe(f"{path}:f1clr+sp+ha,5").hard_augment.r_sel % 4 == 0
    with pytest.raises(ValueError, match="unknown ablation row"):
        config_schema.from_recipe(f"{path}:sp,5")


VIT_RECIPES = ("dino_vit_baseline", "dino_vit_f1clr", "mocov3_vit_baseline", "mocov3_vit_f1clr")


@pytest.mark.parametrize("recipe", VIT_RECIPES)
def test_vit_recipe_is_valid_and_builds(recipe):
    """The ViT recipes: AdamW under the methods' schedules, the efficient ones at 0.6 of the
    epochs with F1-CLR (fixed warm-up, beta1 anti-phased), SP on multiples of the 16 px patch and
    Hard Augment; each builds its method and optimizer state (a ViT-micro stands in for ViT-S)."""
    from effssl_jax import optim
    from effssl_jax.step import create_state
    config = config_schema.from_recipe(os.path.join(ROOT, "configs", f"{recipe}.py"))
    config_schema.validate(config, num_devices=8)
    assert (config.model.arch, config.model.patch_size) == ("vit_small", 16)
    assert config.optim.optimizer == "adamw"
    baseline = config_schema.from_recipe(
        os.path.join(ROOT, "configs", recipe.replace("f1clr", "baseline") + ".py"))
    plan = plan_lib.make_plan(config, 1_281_167)  # ImageNet-1k
    if recipe.endswith("f1clr"):
        assert config.epochs == 0.6 * baseline.epochs
        assert config.optim.schedule == "f1clr" and config.hard_augment.enabled
        assert config.optim.warmup_epochs == baseline.optim.warmup_epochs
        assert plan.resolutions == (96, 128, 160, 192, 224)
        assert float(plan.momentum(0)) == pytest.approx(0.95)  # beta1, eq. 8
        assert float(plan.momentum(plan.warmup_steps)) == pytest.approx(0.85)
    else:
        assert config.optim.schedule == "warmup_cosine" and plan.resolutions == (224,)
    config.model.arch = "vit_micro"
    config.dino.update(num_prototypes=64, proj_hidden=32, bottleneck_dim=16)
    config.mocov3.update(proj_hidden=32, proj_dim=16, pred_hidden=32)
    method = experiment.build_method(config, jnp.float32, plan.steps_per_epoch, plan.total_steps)
    tx = optim.from_config(config.optim, plan.lr, plan.momentum, plan.total_steps)
    state = jax.eval_shape(lambda: create_state(method, tx, jax.random.key(0), 32))
    assert "pos_embed" in state.params["backbone"]
