"""SimSiam's optimizer as its code builds it: `optim.fix_pred_lr` (the predictor's param group
keeps the initial lr, `--fix-pred-lr`) and `optim.decay_bn_and_bias` (weight decay on every
parameter), against torch.optim.SGD / AdamW with SimSiam's param groups and its
adjust_learning_rate; the state's structure with the option on and off, and the config checks."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effssl_jax import config_schema, optim, schedules
from effssl_jax.errors import ConfigError

torch = pytest.importorskip("torch")

INIT_LR, WD, TOTAL, WARMUP = 0.05, 1e-4, 6, 2
SHAPES = {"backbone": {"conv1": {"kernel": (3, 2)}, "bn1": {"scale": (2,), "bias": (2,)}},
          "projector": {"Dense_0": {"Dense_0": {"kernel": (2, 4)}},
                        "BatchNorm_0": {"scale": (4,), "bias": (4,)}},
          "predictor": {"Dense_0": {"Dense_0": {"kernel": (4, 3)}},
                        "Dense_1": {"Dense_0": {"kernel": (3, 4), "bias": (4,)}}}}


def optim_config(optimizer="sgd", schedule="cosine", fix_pred_lr=True):
    c = config_schema.default_config()
    c.method = "simsiam"
    c.optim.update(optimizer=optimizer, schedule=schedule, lr=INIT_LR, momentum=0.9,
                   weight_decay=WD, decay_bn_and_bias=True, fix_pred_lr=fix_pred_lr,
                   warmup_epochs=1.0 if schedule == "f1clr" else 0.0)
    return c


def build(c):
    """optim.from_config over a plan of TOTAL steps, as experiment.build composes it."""
    lr, momentum = schedules.from_config(c.optim, TOTAL, WARMUP)
    return optim.from_config(c.optim, lr, momentum, TOTAL), lr, momentum


def random_tree(rng, offset=0.0):
    return jax.tree.map(lambda s: (offset + rng.standard_normal(s)).astype(np.float32), SHAPES,
                        is_leaf=lambda x: isinstance(x, tuple))


def leaves(tree):
    """[(path, leaf)] in a fixed order; the path's first key names the sub-network."""
    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def adjust_learning_rate(optimizer, init_lr, epoch, epochs):
    """facebookresearch/simsiam main_simsiam.py:359-366, transcribed (one 'epoch' per step)."""
    cur_lr = init_lr * 0.5 * (1. + math.cos(math.pi * epoch / epochs))
    for param_group in optimizer.param_groups:
        if 'fix_lr' in param_group and param_group['fix_lr']:
            param_group['lr'] = init_lr
        else:
            param_group['lr'] = cur_lr


def run_both(optimizer, schedule, fix_pred_lr=True):
    """TOTAL steps with the same random gradients through the library's optimizer and torch's
    (SimSiam's param groups, main_simsiam.py:193-201: encoder with 'fix_lr': False, predictor
    with 'fix_lr': True; every parameter decayed). Returns ({path: ours}, {path: torch's})."""
    c = optim_config(optimizer, schedule, fix_pred_lr)
    tx, lr_fn, momentum_fn = build(c)
    rng = np.random.default_rng(0)
    params = random_tree(rng, offset=0.5)
    t_params = {path: torch.tensor(np.asarray(x), requires_grad=True)
                for path, x in leaves(params)}
    is_pred = lambda path: path.startswith("['predictor']")
    groups = [{"params": [p for k, p in t_params.items() if not is_pred(k)], "fix_lr": False},
              {"params": [p for k, p in t_params.items() if is_pred(k)], "fix_lr": fix_pred_lr}]
    if optimizer == "sgd":
        t_opt = torch.optim.SGD(groups, INIT_LR, momentum=0.9, weight_decay=WD)
    else:
        t_opt = torch.optim.AdamW(groups, INIT_LR, weight_decay=WD)
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(TOTAL):
        grads = random_tree(rng)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)

        if schedule == "cosine":  # SimSiam's own schedule
            adjust_learning_rate(t_opt, INIT_LR, t, TOTAL)
        else:  # F1-CLR (eq. 8, checked by hand in test_schedules.py); fixed groups keep INIT_LR
            for group in t_opt.param_groups:
                group["lr"] = INIT_LR if group["fix_lr"] else float(lr_fn(t))
        for group in t_opt.param_groups:  # the schedule's momentum (beta1 for AdamW)
            if optimizer == "sgd":
                group["momentum"] = float(momentum_fn(t))
            else:
                group["betas"] = (float(momentum_fn(t)), c.optim.beta2)
        for path, g in leaves(grads):
            t_params[path].grad = torch.tensor(np.asarray(g))
        t_opt.step()
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(
            t_opt.param_groups[0]["lr"], rel=1e-6)  # the logged lr is the scheduled one
    return dict(leaves(params)), {k: p.detach().numpy() for k, p in t_params.items()}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("schedule", ["cosine", "f1clr"])
def test_predictor_keeps_the_initial_lr_as_simsiam(optimizer, schedule):
    """The predictor's parameters move as torch's param group whose lr adjust_learning_rate
    resets to init_lr every step, the others as the scheduled lr (cosine: SimSiam's own
    adjust_learning_rate; F1-CLR: lr 0 at step 0, where only the predictor moves)."""
    ours, ref = run_both(optimizer, schedule)
    # float32 parameters of order 1: a few ulp of rounding per step, summed in another order
    for path in ref:
        np.testing.assert_allclose(ours[path], ref[path], rtol=0, atol=2e-6, err_msg=path)
    # The option matters: without it the predictor follows the schedule and ends elsewhere.
    scheduled, _ = run_both(optimizer, schedule, fix_pred_lr=False)
    pred = [k for k in ref if k.startswith("['predictor']")]
    assert max(np.abs(ours[k] - scheduled[k]).max() for k in pred) > 1e-3
    assert all(np.array_equal(ours[k], scheduled[k]) for k in ref if k not in pred)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_without_fix_pred_lr_every_group_follows_the_schedule(optimizer):
    ours, ref = run_both(optimizer, "cosine", fix_pred_lr=False)
    for path in ref:
        np.testing.assert_allclose(ours[path], ref[path], rtol=0, atol=2e-6, err_msg=path)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_state_structure_and_logged_keys_do_not_depend_on_the_option(optimizer):
    """fix_pred_lr is a static argument of a stateless link: the optimizer state of a run with
    it on restores into one with it off and back (so a resumed run may change it), and
    `opt_state.hyperparams` holds the same keys (step.py logs them)."""
    params = random_tree(np.random.default_rng(1))
    on, off = (build(optim_config(optimizer, fix_pred_lr=f))[0].init(params)
               for f in (True, False))
    assert jax.tree.structure(on) == jax.tree.structure(off)
    assert set(on.hyperparams) == set(off.hyperparams)


def test_resume_may_change_fix_pred_lr_but_not_zero_init_residual(tmp_path):
    c = config_schema.default_config()
    (tmp_path / "config.json").write_text(c.to_json_best_effort())
    c.optim.fix_pred_lr = True
    assert config_schema.resume_changes(str(tmp_path), c) == {"optim.fix_pred_lr": (False, True)}
    c.model.zero_init_residual = True
    with pytest.raises(ConfigError, match="model.zero_init_residual"):
        config_schema.resume_changes(str(tmp_path), c)


def test_a_network_without_predictor_is_refused():
    params = {"backbone": {"kernel": jnp.ones((2, 2))}, "projector": {"kernel": jnp.ones(2)}}
    tx = optim.sgd(lambda s: 0.1, lambda s: 0.9, 0.0, False, predictor_lr=0.1)
    with pytest.raises(ConfigError, match="fix_pred_lr=False"):
        tx.update(params, tx.init(params), params)


def test_config_checks():
    c = optim_config()
    config_schema.validate(c)
    for method in ("byol", "mocov3"):  # the other methods with a predictor
        c.method = method
        config_schema.validate(c)
    for method in ("simclr", "mocov2plus", "dino"):
        c.method = method
        with pytest.raises(ConfigError, match=f"method='{method}' has no predictor"):
            config_schema.validate(c)
    c = optim_config()
    c.optim.schedule, c.optim.lr_range = "exponential", (1e-4, 1.0)
    with pytest.raises(ConfigError, match="LR range test"):
        config_schema.validate(c)
    c = config_schema.default_config()
    c.model.zero_init_residual = True
    config_schema.validate(c)
    c.model.arch = "vit_tiny"
    with pytest.raises(ConfigError, match="zero_init_residual=False"):
        config_schema.validate(c)


def test_predictor_methods_are_those_whose_network_has_one():
    """config_schema.PREDICTOR_METHODS names exactly the methods whose network has the
    `predictor` sub-tree that fix_pred_lr holds."""
    from effssl_jax import experiment
    from effssl_jax.methods import METHODS
    c = config_schema.default_config()
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    with_predictor = set()
    for name in METHODS:
        c.method = name
        net = experiment.build_method(c, jnp.float32, 4, 40).net
        shapes = jax.eval_shape(lambda net=net: net.init(jax.random.key(0),
                                                         jnp.zeros((2, 16, 16, 3)), train=False))
        if optim.PREDICTOR in shapes["params"]:
            with_predictor.add(name)
    assert with_predictor == set(config_schema.PREDICTOR_METHODS)


def test_simsiam_recipes_train_as_simsiams_code():
    """configs/simsiam_*.py: every parameter decayed, zero-initialised residual BNs, fixed
    predictor lr; the other methods' recipes and the paper's ablation keep the shared settings."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    load = lambda r: config_schema.from_recipe(os.path.join(root, "configs", r))
    simsiam = lambda c: (c.optim.decay_bn_and_bias, c.model.zero_init_residual,
                         c.optim.fix_pred_lr)
    for recipe in ("simsiam_baseline.py", "simsiam_f1clr.py"):
        assert simsiam(load(recipe)) == (True, True, True)
    for recipe in ("byol_baseline.py", "simclr_f1clr.py", "dino_f1clr.py",
                   "mocov2plus_baseline.py", "ablation.py:ca", "ablation.py:f1clr+sp+ha",
                   "imagenette_ablation.py:ca", "lightly_imagenette.py:cosine"):
        assert simsiam(load(recipe)) == (False, False, False), recipe
