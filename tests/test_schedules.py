"""Schedules against the paper's equations, evaluated by hand at chosen steps."""
import math

import numpy as np
import pytest

from effssl_jax import schedules

PEAK, TW, L = 0.2, 80, 480
BL, BH = 0.85, 0.95


def eq8_lr(t):  # written out from eq. 8
    if t < TW:
        return PEAK - 0.5 * PEAK * (math.cos(t / TW * math.pi) + 1)
    return 0.5 * PEAK * (math.cos((t - TW) / (L - TW) * math.pi) + 1)


def eq8_momentum(t):
    if t < TW:
        return BL + 0.5 * (BH - BL) * (math.cos(t / TW * math.pi) + 1)
    return BH - 0.5 * (BH - BL) * (math.cos((t - TW) / (L - TW) * math.pi) + 1)


@pytest.mark.parametrize("t, lr, mom", [
    (0, 0.0, BH),                 # start: lr 0, momentum high
    (40, 0.1, 0.90),              # half-way through warm-up: half of both ranges
    (80, PEAK, BL),               # end of warm-up: lr peak, momentum low
    (280, 0.1, 0.90),             # middle of the decay
    (480, 0.0, BH),               # end: lr 0, momentum high
])
def test_f1clr_hand_values(t, lr, mom):
    lr_fn = schedules.f1clr_schedule(PEAK, TW, L)
    mom_fn = schedules.f1clr_momentum_schedule(BL, BH, TW, L)
    assert float(lr_fn(t)) == pytest.approx(lr, abs=1e-7)
    assert float(mom_fn(t)) == pytest.approx(mom, abs=1e-7)


def test_f1clr_matches_eq8_everywhere_and_is_antiphased():
    lr_fn = schedules.f1clr_schedule(PEAK, TW, L)
    mom_fn = schedules.f1clr_momentum_schedule(BL, BH, TW, L)
    t = np.arange(L + 1)
    lr, mom = np.asarray(lr_fn(t)), np.asarray(mom_fn(t))
    np.testing.assert_allclose(lr, [eq8_lr(s) for s in t], atol=1e-6)
    np.testing.assert_allclose(mom, [eq8_momentum(s) for s in t], atol=1e-6)
    # Anti-phase: the momentum is an affine, decreasing function of the learning rate.
    np.testing.assert_allclose(mom, BH - (BH - BL) * lr / PEAK, atol=1e-6)
    assert lr.argmax() == TW and mom.argmin() == TW


def test_f1clr_warmup_is_fixed_length_when_training_is_extended():
    for total in (160, 480, 800):
        lr = np.asarray(schedules.f1clr_schedule(PEAK, TW, total)(np.arange(total + 1)))
        assert lr.argmax() == TW


def test_one_cycle_warmup_is_a_fraction():
    for total in (100, 400):
        lr = np.asarray(schedules.one_cycle_schedule(1.0, 0.3, total)(np.arange(total + 1)))
        assert lr.argmax() == round(0.3 * total)


def test_cosine_and_warmup_cosine():
    cos = schedules.cosine_schedule(0.1, 800)
    assert float(cos(0)) == pytest.approx(0.1)
    assert float(cos(400)) == pytest.approx(0.05, abs=1e-7)
    assert float(cos(800)) == pytest.approx(0.0, abs=1e-7)
    wc = schedules.warmup_cosine_schedule(0.1, 10, 110)
    assert float(wc(5)) == pytest.approx(0.05)          # linear warm-up (eq. 6)
    assert float(wc(10)) == pytest.approx(0.1)
    assert float(wc(60)) == pytest.approx(0.05, abs=1e-7)


def test_ema_cosine():
    ema = schedules.ema_cosine_schedule(0.99, 100)
    assert float(ema(0)) == pytest.approx(0.99)
    assert float(ema(50)) == pytest.approx(0.995)
    assert float(ema(100)) == pytest.approx(1.0)


def test_exponential():
    f = schedules.exponential_schedule(1e-4, 1.0, 5)
    np.testing.assert_allclose(np.asarray(f(np.arange(5))), [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
                               rtol=1e-5)
