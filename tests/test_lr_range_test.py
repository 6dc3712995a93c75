"""LR range test: smoothing, divergence stop and the suggested eps_max rule."""
import numpy as np
import pytest

from effssl_jax import lr_range_test


def test_smoothing_is_bias_corrected_ema():
    s = lr_range_test.smooth([2.0, 2.0, 2.0])
    np.testing.assert_allclose(s, [2.0, 2.0, 2.0])  # no bias towards 0 at the start
    s = lr_range_test.smooth([1.0, 3.0])
    assert s[1] == pytest.approx((0.98 * 0.02 * 1 + 0.02 * 3) / (1 - 0.98 ** 2))


def test_suggestion_is_a_tenth_of_the_lr_at_the_loss_minimum():
    lrs = np.logspace(-4, 1, 200)
    # A loss that falls until lr = 0.3, then blows up.
    losses = np.where(lrs < 0.3, 1 - np.log10(lrs / 1e-4) / 4, 0.2 + 50 * (lrs - 0.3))
    lr, rule = lr_range_test.suggest(lrs, losses)
    assert 0.01 < lr < 0.04  # the smoothed minimum lags the raw one slightly
    assert "/ 10" in rule


def test_divergence_stop():
    stop = lr_range_test.DivergenceStop()
    assert not any(stop({"loss": 1.0 - 0.01 * i}) for i in range(20))
    assert stop({"loss": float("nan")})
    stop = lr_range_test.DivergenceStop()
    for i in range(20):
        stop({"loss": 1.0})
    assert any(stop({"loss": 100.0}) for _ in range(50))
