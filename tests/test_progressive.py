"""Resolution plans and their speed-up (eq. 9, cost form) against Table 6; eq. 11."""
import pytest

from effssl_jax import config_schema, hard_augment, plan, progressive


def paper_plan(r_min=96, schedule="super_progressive"):
    c = config_schema.default_config()
    c.epochs, c.batch_size = 480, 128
    c.optim.schedule, c.optim.lr, c.optim.warmup_epochs = "f1clr", 0.2, 80
    c.progressive.schedule, c.progressive.r_min = schedule, r_min
    return plan.make_plan(c, 9469)


def _speedup(p):
    """Eq. 9 (cost form) of a plan."""
    return progressive.predicted_speedup(list(p.stages), p.r_max)


def test_paper_plan_stages():
    p = paper_plan()
    res = [s.resolution for s in p.stages]
    assert res == [224, 96, 128, 160, 192, 224]  # "6 stages each a multiple of 32"
    assert p.stages[0].start == 0 and p.stages[0].end == p.warmup_steps  # full res in warm-up
    assert p.resolution(0) == 224 and p.resolution(p.warmup_steps) == 96
    assert p.resolution(p.total_steps - 1) == 224
    assert all(r % 32 == 0 for r in res)
    assert sum(s.steps for s in p.stages) == p.total_steps
    ramp = p.stages[1:]
    assert max(s.steps for s in ramp) - min(s.steps for s in ramp) <= 1  # linear ramp
    assert [b.start for b in p.stages[1:]] == [a.end for a in p.stages[:-1]]


@pytest.mark.parametrize("r_min, table6", [(128, 1.40), (96, 1.60), (64, 1.82)])
def test_predicted_speedup_matches_table6(r_min, table6):
    # Our plan predicts 1.42x / 1.60x / 1.78x; the paper's 128 and 64 rows are within 0.05.
    assert _speedup(paper_plan(r_min)) == pytest.approx(table6, abs=0.05)


def test_paper_plan_speedup_by_hand():
    # 80 of 480 epochs at 224 px, then 80 epochs at each of 96..224 px.
    cost = (80 + 80 * sum((r / 224) ** 2 for r in (96, 128, 160, 192, 224))) / 480
    assert _speedup(paper_plan(96)) == pytest.approx(1 / cost, rel=1e-3)
    assert 1 / cost == pytest.approx(1.598, abs=1e-3)


def test_progressive_starts_low_and_fixed_is_constant():
    p = paper_plan(schedule="progressive")
    assert p.resolution(0) == 96 and p.resolution(p.total_steps - 1) == 224
    f = paper_plan(schedule="fixed")
    assert f.resolutions == (224,) and _speedup(f) == 1.0


def test_magnitude_rises_linearly_to_standard():
    p = paper_plan()
    assert p.magnitude(0) == pytest.approx(2.0)
    assert p.magnitude(p.total_steps - 1) == pytest.approx(5.0)
    mid = p.magnitude((p.total_steps - 1) // 2)
    assert mid == pytest.approx(3.5, abs=1e-3)
    assert paper_plan(schedule="fixed").magnitude(0) == 5.0


def test_small_bucket_step_and_errors():
    stages = progressive.resolution_stages("super_progressive", 100, 10, 32, 64, 8)
    assert [s.resolution for s in stages] == [64, 32, 40, 48, 56, 64]
    with pytest.raises(ValueError, match="multiples of bucket_step"):
        progressive.resolution_stages("progressive", 100, 0, 100, 224, 32)


def test_hard_augment_overhead_eq11():
    # The paper's example: r=224, r_sel=64, m=4, C=6 -> about 5% overhead.
    assert 1 - hard_augment.speed_factor(224, 64, 4) == pytest.approx(0.052, abs=1e-3)
