"""Cost accounting (costs.py): the paper's convention against hand counts and the paper's Table 2,
the plan's predicted speed-up, and what summary.json reports about cost."""
import dataclasses
import os

import flax.linen as nn
import pytest

from effssl_jax import config_schema, costs, hard_augment, progressive, run_record
from effssl_jax import plan as plan_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Net(nn.Module):
    """A 3x3 conv (3 -> 8, stride 2, padded), global pool, a 8 -> 5 dense layer."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding=1)(x))
        return nn.Dense(5)(x.mean(axis=(1, 2)))


def test_forward_flops_count_two_per_multiply_add_of_convs_and_matmuls_only():
    # 16 px, stride 2: 8 x 8 outputs x 8 channels, each 3 x 3 x 3 multiply-adds (padding
    # included, as fvcore counts); then 8 x 5 for the dense layer. ReLU, mean, bias: nothing.
    assert costs.paper_forward_flops(_Net(), 16) == 2 * (8 * 8 * 8 * 27 + 8 * 5)


def test_resnet50_forward_is_4_09_gmacs_as_torchvision_reports():
    c = config_schema.default_config()
    c.method, c.model.arch = "simclr", "resnet50"
    net = costs.PaperCost(c)._method.net
    # torchvision's ResNet-50 card: 4.09 GFLOPS (multiply-adds) with its 1000-way classifier
    # (2048 x 1000 = 2.05 M); here SimCLR's projector (2048x2048 + 2048x256 = 4.72 M) instead.
    backbone_gmacs = costs.paper_forward_flops(net, 224) / 2e9 - (2048 * 2048 + 2048 * 256) / 1e9
    assert backbone_gmacs + 2048 * 1000 / 1e9 == pytest.approx(4.09, abs=0.005)


@pytest.mark.parametrize("method, table2", [("simsiam", 248), ("simclr", 247), ("byol", 371),
                                            ("mocov2plus", 371), ("dino", 372)])
def test_paper_recipes_reproduce_table_2(method, table2):
    """Table 2: ResNet-50, 800 epochs of Imagenette (9469 images) at 224 px. SimSiam and SimCLR
    train 2 views x (forward + backward = 2 forwards); the others add the target's 2 forwards."""
    config = config_schema.from_recipe(os.path.join(ROOT, "configs", f"{method}_baseline.py"))
    config.augment.local_crops.count = 0  # the paper trains two views (DINO's recipe adds 8)
    plan = plan_lib.make_plan(config, 9469)
    pflops = costs.PaperCost(config).pflops(plan.steps_by_resolution(), plan)
    assert pflops == pytest.approx(table2, rel=0.01)


def test_hard_augment_adds_its_scoring_forwards_at_r_sel():
    c = config_schema.default_config()
    c.method, c.model.arch, c.model.width = "byol", "resnet18", 8
    plain = costs.PaperCost(c)
    c.hard_augment.update(enabled=True, num_views=4, r_sel=32)
    ha = costs.PaperCost(c)
    online, target = plain._forwards(64)
    assert plain.per_image(64) == 2 * (2 * online + target)
    assert ha.per_image(64) - plain.per_image(64) == 4 * sum(plain._forwards(32))


def test_the_scoring_forwards_follow_the_side_rule_per_bucket():
    """With r_sel = 0 each bucket scores at its own side (hard_augment.selection_side): the plan,
    the paper's cost, eq. 11's overhead and the printed plan agree."""
    c = config_schema.default_config()
    c.method, c.model.arch, c.model.width, c.epochs, c.batch_size = "simclr", "resnet18", 8, 10, 16
    c.optim.update(schedule="f1clr", warmup_epochs=2)
    c.progressive.update(schedule="super_progressive", r_min=96, r_max=224, bucket_step=32)
    c.hard_augment.update(enabled=True, num_views=4)
    plan = plan_lib.make_plan(c, 160)
    sides = {r: plan.selection_side(r) for r in plan.resolutions}
    assert sides == {96: 48, 128: 48, 160: 48, 192: 55, 224: 64}
    paper = costs.PaperCost(c)
    c.hard_augment.enabled = False
    plain = costs.PaperCost(c)
    for r, side in sides.items():
        assert paper.per_image(r) - plain.per_image(r) == 4 * sum(plain._forwards(side))
    assert "48px (at 96px)" in plan.describe() and "64px (at 224px)" in plan.describe()
    c.hard_augment.r_sel = 8  # the plan keeps the config it was made from
    assert plan.selection_side(224) == 64
    steps = plan.steps_by_resolution()
    assert hard_augment.overhead_eq11(steps, plan.selection_side, 4) == pytest.approx(
        sum(n * (1 - hard_augment.speed_factor(r, sides[r], 4)) for r, n in steps.items())
        / sum(steps.values()))


def test_a_resnet_plan_predicts_eq9_and_prints_it_with_the_paper_cost():
    c = config_schema.default_config()
    c.model.arch, c.model.width, c.epochs, c.batch_size = "resnet18", 8, 10, 16
    c.optim.update(schedule="f1clr", warmup_epochs=2)
    c.progressive.update(schedule="super_progressive", r_min=16, r_max=32, bucket_step=8)
    plan = plan_lib.make_plan(c, 160)
    forecast = costs.forecast(c, plan)
    eq9 = progressive.predicted_speedup(list(plan.stages), 32)
    assert forecast.speedup == costs.Speedup(eq9, "eq9_r2", eq9) and eq9 > 1.2
    assert forecast.selection_overhead_eq11 is None
    assert forecast.describe() == (
        f"predicted speed-up of the resolution plan (eq. 9): {eq9:.2f}x\n"
        f"training cost in the paper's convention (costs.py): {forecast.plan_pflops_paper:.4g} "
        "PFLOPs")


SUMMARY_KEYS = {  # what reports, benchmarks and results/ read
    "name", "method", "lr_schedule", "resolution_schedule", "hard_augment", "steps", "epochs",
    "knn_top1_init", "knn_top1", "wall_clock_s", "train_time_s", "compile_s", "eval_s",
    "total_pflops", "pflops_paper", "eval_pflops", "selection_pflops", "selection_overhead",
    "selection_overhead_eq11", "pflops_by_resolution", "steps_by_resolution", "gflops_per_step",
    "predicted_speedup_resolution", "predicted_speedup_basis", "predicted_speedup_eq9",
    "compiled_steps", "skipped_images"}


class _Spec:
    def __init__(self, resolution):
        self.resolution = resolution


class _Steps:
    """What run_cost reads of compile.CompiledSteps."""
    flops = {_Spec(16): 3e9, _Spec(32): 12e9}
    compile_count = 2


def test_summary_cost_keys_come_from_one_typed_record():
    c = config_schema.default_config()
    c.model.arch, c.model.width, c.epochs, c.batch_size = "resnet18", 8, 1, 16
    c.hard_augment.update(enabled=True, num_views=4, r_sel=8)
    plan = plan_lib.make_plan(c, 64)
    record = run_record.RunRecord(wall_clock_s=10.0, compile_s=2.0, eval_s=1.0,
                                  checkpoint_s=0.5, selection_flops=3e9, eval_flops=4e12)
    for r, flops in ((16, 3e9), (32, 12e9), (32, 12e9)):
        record.add_step(r, flops, 1e9)
    forecast = costs.forecast(c, plan)
    cost = costs.run_cost(plan, record, forecast, _Steps())
    assert {f.name for f in dataclasses.fields(cost)} - {"speedup_vs"} == SUMMARY_KEYS - {
        "name", "method", "lr_schedule", "resolution_schedule", "hard_augment", "steps",
        "epochs", "knn_top1_init", "knn_top1", "skipped_images"}
    summary = run_record.summary(c, plan, record, cost, skipped_images=0)
    assert set(summary) == SUMMARY_KEYS and summary["steps"] == 3
    assert summary["total_pflops"] == pytest.approx(27e9 / 1e15)
    assert summary["selection_overhead"] == pytest.approx(6e9 / 27e9)
    assert summary["train_time_s"] == 6.5 and summary["gflops_per_step"] == {"16": 3, "32": 12}
    assert summary["pflops_paper"] == forecast.paper.pflops({"16": 1, "32": 2}, plan)
    assert summary["predicted_speedup_basis"] == "eq9_r2"
    baseline = {"total_pflops": 2 * cost.total_pflops, "pflops_paper": 3 * cost.pflops_paper,
                "train_time_s": 13.0}
    compared = costs.run_cost(plan, record, forecast, _Steps(), baseline, "runs/base")
    assert compared.to_dict()["speedup_vs"] == pytest.approx(
        {"workdir": "runs/base", "flops": 2.0, "flops_paper": 3.0, "train_time": 2.0})
