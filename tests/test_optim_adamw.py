"""AdamW under F1-CLR: the learning rate and beta1 of `opt_state.hyperparams` against eq. 8 by
hand at chosen steps, the weight-decay cosine (DINO's 0.04 -> 0.4), updates against
torch.optim.AdamW given the same per-step lr / betas / weight decay, and the config checks."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effssl_jax import config_schema, optim, schedules
from effssl_jax.errors import ConfigError

torch = pytest.importorskip("torch")

PEAK, TW, L = 1e-3, 8, 48  # eps_max, t_w and the run's steps of eq. 8
BL, BH = 0.85, 0.95
WD0, WD1 = 0.04, 0.4


def optim_config(schedule="f1clr", **overrides):
    c = config_schema.default_config()
    c.optim.update({**dict(optimizer="adamw", schedule=schedule, lr=PEAK, momentum_low=BL,
                           momentum_high=BH, weight_decay=WD0, weight_decay_end=WD1),
                    **overrides})
    return c


def build(c, total=L, warmup=TW):
    """optim.from_config over a plan of `total` steps, as experiment.build composes it."""
    lr, momentum = schedules.from_config(c.optim, total, warmup)
    return optim.from_config(c.optim, lr, momentum, total)


PARAMS = {"conv": {"kernel": jnp.ones((3, 2))}, "bn": {"scale": jnp.ones(2),
                                                      "bias": jnp.zeros(2)}}


def hyperparams_per_step(tx, steps):
    """hyperparams after update t (the values update t used), t = 0..steps-1."""
    state, out = tx.init(PARAMS), []
    update = jax.jit(tx.update)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    for _ in range(steps):
        _, state = update(zeros, state, PARAMS)
        out.append({k: float(v) for k, v in state.hyperparams.items()})
    return out


@pytest.fixture(scope="module")
def f1clr_hyper():
    return hyperparams_per_step(build(optim_config()), L + 1)


# Eq. 8 by hand. Warm-up: lr = eps_max (1 - cos(pi t / t_w)) / 2, beta1 = b_l + (b_h - b_l)
# (1 + cos(pi t / t_w)) / 2; decay: lr = eps_max (1 + cos(pi (t - t_w) / (L - t_w))) / 2,
# beta1 = b_h - (b_h - b_l) (1 + cos(pi (t - t_w) / (L - t_w))) / 2. cos(pi / 4) = 0.70710678.
@pytest.mark.parametrize("t, lr, beta1", [
    (0, 0.0, BH),                               # warm-up start: lr 0, beta1 high
    (2, 1.4644660940672624e-4, 0.9353553390593274),  # a quarter of the warm-up
    (4, 5e-4, 0.90),                            # mid-warm-up: half of both ranges
    (8, PEAK, BL),                              # peak: lr eps_max, beta1 low
    (28, 5e-4, 0.90),                           # mid-decay
    (48, 0.0, BH),                              # end: lr 0, beta1 high
])
def test_adamw_f1clr_drives_lr_and_beta1_as_eq8(f1clr_hyper, t, lr, beta1):
    hyper = f1clr_hyper[t]
    assert hyper["learning_rate"] == pytest.approx(lr, abs=1e-9)
    assert hyper["momentum"] == pytest.approx(beta1, abs=1e-7)  # beta1, logged as `momentum`
    assert hyper["beta2"] == pytest.approx(0.999)


# wd = WD1 + (WD0 - WD1) (1 + cos(pi t / L)) / 2 (DINO utils.cosine_scheduler, no warm-up).
@pytest.mark.parametrize("t, wd", [(0, WD0), (12, 0.4 - 0.36 * 0.8535533905932737), (24, 0.22),
                                   (36, 0.4 - 0.36 * 0.1464466094067262), (48, WD1)])
def test_weight_decay_cosine(f1clr_hyper, t, wd):
    assert f1clr_hyper[t]["weight_decay"] == pytest.approx(wd, abs=1e-7)


def test_beta1_is_sgds_momentum_and_constant_outside_the_cycles():
    """The same schedules drive SGD's momentum and AdamW's beta1; without a cycle (cosine) beta1
    is optim.momentum, and a negative weight_decay_end keeps the weight decay constant."""
    sgd = hyperparams_per_step(build(optim_config(optimizer="sgd")), L + 1)
    adamw = hyperparams_per_step(build(optim_config()), L + 1)
    for key in ("learning_rate", "momentum", "weight_decay"):
        assert [h[key] for h in sgd] == [h[key] for h in adamw]
    cosine = hyperparams_per_step(build(optim_config("cosine", momentum=0.9,
                                                     weight_decay_end=-1.0)), 10)
    assert all(h["momentum"] == pytest.approx(0.9) for h in cosine)
    assert all(h["weight_decay"] == pytest.approx(WD0) for h in cosine)
    assert cosine[0]["learning_rate"] == pytest.approx(PEAK)


@pytest.mark.parametrize("decay_bn_and_bias", [False, True])
def test_updates_equal_torch_adamw(decay_bn_and_bias):
    """Seven steps through warm-up and decay (lr, beta1 and weight decay change every step),
    random gradients: the parameters equal torch.optim.AdamW's, whose param groups are given the
    same per-step lr, betas and weight decay (no decay on BN scale / bias unless asked)."""
    c = optim_config(lr=0.05, decay_bn_and_bias=decay_bn_and_bias)
    total, warmup = 7, 3
    tx = build(c, total, warmup)
    lr_fn, beta1_fn = schedules.from_config(c.optim, total, warmup)
    wd_fn = schedules.cosine_between_schedule(WD0, WD1, total)
    rng = np.random.default_rng(0)
    init = {"conv": {"kernel": rng.standard_normal((3, 2))},
            "bn": {"scale": 1 + 0.1 * rng.standard_normal(2), "bias": rng.standard_normal(2)}}
    init = jax.tree.map(lambda x: x.astype(np.float32), init)

    t_params = {k: torch.tensor(v, requires_grad=True)
                for k, v in (("kernel", init["conv"]["kernel"]), ("scale", init["bn"]["scale"]),
                             ("bias", init["bn"]["bias"]))}
    decayed = ["kernel", "scale", "bias"] if decay_bn_and_bias else ["kernel"]
    groups = [{"params": [t_params[k] for k in decayed], "decayed": True},
              {"params": [t_params[k] for k in t_params if k not in decayed], "decayed": False}]
    t_opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=0.0)

    params, state = init, tx.init(init)
    update = jax.jit(tx.update)
    for t in range(total):
        g = {"conv": {"kernel": rng.standard_normal((3, 2))},
             "bn": {"scale": rng.standard_normal(2), "bias": rng.standard_normal(2)}}
        g = jax.tree.map(lambda x: x.astype(np.float32), g)
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)

        lr, beta1, wd = float(lr_fn(t)), float(beta1_fn(t)), float(wd_fn(t))
        for group in t_opt.param_groups:
            group.update(lr=lr, betas=(beta1, c.optim.beta2),
                         weight_decay=wd if group["decayed"] else 0.0)
        for name, leaf in (("kernel", g["conv"]["kernel"]), ("scale", g["bn"]["scale"]),
                           ("bias", g["bn"]["bias"])):
            t_params[name].grad = torch.tensor(leaf)
        t_opt.step()

        # float32 parameters of order 1: a few ulp (~1e-7) of rounding per step, in another order
        for mine, name in ((params["conv"]["kernel"], "kernel"), (params["bn"]["scale"], "scale"),
                           (params["bn"]["bias"], "bias")):
            np.testing.assert_allclose(mine, t_params[name].detach().numpy(), rtol=0, atol=1e-6)
    moved = np.abs(params["conv"]["kernel"] - init["conv"]["kernel"]).max()
    assert moved > 0.05  # real updates were compared


def test_config_checks():
    c = optim_config()
    config_schema.validate(c)
    for key, value, expected in (("optimizer", "adam", "optim.optimizer='adam' is unknown; "
                                  "valid: sgd, adamw"),
                                 ("beta2", 1.0, "optim.beta2=1.0 must lie in [0, 1)"),
                                 ("momentum", 1.5, "optim.momentum=1.5 (AdamW's beta1)"),
                                 ("weight_decay", -0.1, "optim.weight_decay=-0.1 must be >= 0")):
        bad = c.copy_and_resolve_references()
        bad.optim[key] = value
        with pytest.raises(ConfigError) as e:
            config_schema.validate(bad)
        assert expected in str(e.value) and "\n" not in str(e.value)


def test_resume_refuses_another_optimizer(tmp_path):
    """SGD's and AdamW's states differ: a resumed run may not switch (config_schema.RESUME_FIXED);
    the weight-decay schedule may change (the state holds its value either way)."""
    saved = optim_config()
    (tmp_path / "config.json").write_text(json.dumps(json.loads(saved.to_json_best_effort())))
    changed = saved.copy_and_resolve_references()
    changed.optim.weight_decay_end = -1.0
    assert set(config_schema.resume_changes(str(tmp_path), changed)) == {"optim.weight_decay_end"}
    changed.optim.optimizer = "sgd"
    with pytest.raises(ConfigError, match="optim.optimizer='adamw' cannot change on resume"):
        config_schema.resume_changes(str(tmp_path), changed)
