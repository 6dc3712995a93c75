"""ViTs trained with the paper's strategies, on vit_micro (ViT-Ti's 3 heads, 2 blocks of width 48)
with 4 px patches and 8-16 px images: a Super Progressive + Hard Augment run of launch.py compiles
one step per bucket (a 12 px one) and exports weights that timm loads and that give
the Flax features; Hard Augment picks the brute-force hardest pair; resolutions that do not tile
into patches are config errors; the predicted speed-up comes from measured FLOPs per bucket."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COMPILE_FAST, made_once
from tiny import tiny_config, tiny_experiment, tiny_images

from effssl_jax import augment, config_schema, costs, experiment, export, step
from effssl_jax.errors import ConfigError, UserError
from effssl_jax.models import backbones, vit

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DINO_SLIM = dict(proj_hidden=32, bottleneck_dim=16, num_prototypes=64)
SP_HA_RUN = [  # 8 steps an epoch: 8 at 16 px (warm-up), then 12 at 12 px and 12 at 16 px
    "--config", "configs/quickstart.py", "--config.model.arch=vit_micro",
    "--config.model.patch_size=4", "--config.method=simsiam",  # BN heads sized by feature_dim
    "--config.simsiam.proj_dim=32", "--config.simsiam.proj_layers=2",
    "--config.simsiam.pred_hidden=16",
    "--config.synthetic_train_size=256", "--config.synthetic_test_size=64",
    "--config.batch_size=32", "--config.epochs=4", "--config.progress_bar=False",
    "--config.optim.schedule=f1clr", "--config.optim.warmup_epochs=1",
    "--config.progressive.schedule=super_progressive", "--config.progressive.r_max=16",
    "--config.progressive.r_min=12", "--config.progressive.bucket_step=4",
    "--config.hard_augment.enabled=True", "--config.hard_augment.num_views=3",
    "--config.hard_augment.r_sel=8", "--config.log_every_steps=1",
    "--config.eval.every_epochs=4", "--config.eval.at_init=False"]


def vit_config(method="dino"):
    c = tiny_config(method)
    c.model.arch, c.model.patch_size = "vit_micro", 4
    c.dino.update(DINO_SLIM)
    return c


@pytest.fixture(scope="session")
def sp_ha_run(tmp_path_factory, worker_id):
    """(workdir, stdout) of the finished launch.py run SP_HA_RUN (made once for all workers)."""
    def make(workdir):
        r = subprocess.run([sys.executable, "launch.py", *SP_HA_RUN, f"--workdir={workdir}"],
                           cwd=ROOT, env={**os.environ, "XLA_FLAGS": COMPILE_FAST},
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        (workdir / "stdout.txt").write_text(r.stdout)
    workdir = made_once(tmp_path_factory, worker_id, "vit_sp_ha", make)
    return workdir, (workdir / "stdout.txt").read_text()


def test_super_progressive_hard_augment_vit_compiles_once_per_bucket(sp_ha_run):
    workdir, stdout = sp_ha_run
    summary = json.loads((workdir / "summary.json").read_text())
    # A 12 px bucket (3 x 3 patches: a multiple of the patch, not of ResNets' 32 px rule), scored
    # at 8 px; 16 px during the warm-up and at the end: two distinct buckets, one compile each.
    assert summary["compiled_steps"] == 2
    assert summary["steps_by_resolution"] == {"16": 8 + 12, "12": 12}
    g = summary["gflops_per_step"]
    assert set(g) == {"12", "16"} and g["12"] < g["16"]
    with open(workdir / "metrics.jsonl") as f:
        rows = [m for m in map(json.loads, f) if "loss" in m]
    assert [m["resolution"] for m in rows] == [16] * 8 + [12] * 12 + [16] * 12
    assert all(np.isfinite(m["loss"]) and np.isfinite(m["ha_selected_loss"]) for m in rows)
    assert summary["predicted_speedup_basis"] == "measured_flops"
    assert "backbone FLOPs per bucket" in stdout


def test_exported_vit_loads_into_timm_and_gives_the_flax_features(sp_ha_run, tmp_path):
    workdir, _ = sp_ha_run
    with pytest.raises(UserError, match="use --format timm"):
        export.export_workdir(str(workdir), str(tmp_path / "x.pt"), format="torchvision")
    out = tmp_path / "backbone.pt"
    meta = export.main(["--workdir", str(workdir), "--out", str(out)])  # ViTs: timm by default
    assert json.loads((tmp_path / "backbone.json").read_text()) == meta
    assert meta["format"] == "timm" and meta["feature_dim"] == 48
    assert (meta["patch_size"], meta["img_size"], meta["dynamic_img_size"]) == (4, 16, True)
    kwargs = meta["timm_kwargs"]
    assert (kwargs["num_classes"], kwargs["img_size"], kwargs["patch_size"]) == (0, 16, 4)
    model = timm.create_model(meta["timm_model"], pretrained=False, **kwargs).eval()
    model.load_state_dict(torch.load(out), strict=True)

    exp, state, _ = experiment.restore(str(workdir))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    net = exp.method.net
    features = jax.jit(lambda v, x: net.apply(v, x, method=net.features))
    for size in (16, 8):  # the stored grid, and one the position embedding is resampled to
        x = np.random.default_rng(size).normal(size=(4, size, size, 3)).astype(np.float32)
        with torch.no_grad():
            theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        ours = np.asarray(features(variables, x))
        assert ours.shape == theirs.shape == (4, 48)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_hard_augment_with_a_vit_picks_the_brute_force_hardest_pair():
    c = vit_config("dino")
    c.hard_augment.update(enabled=True, num_views=4, r_sel=8)
    exp = tiny_experiment(c)
    spec = exp.spec(8, 16)  # the 8 px bucket: the scored views are the trained ones (compiles
    assert (spec.r_sel, spec.num_views) == (8, 4)  # faster; the launch.py run re-renders)
    state = exp.init(jax.random.key(0))
    images, rng, n = tiny_images(8, 16), jax.random.key(5), 4
    selection = jax.jit(lambda s, im: step._hard_augment_pair(
        exp.method, spec, exp.dtype, s, rng, im, 5.0))(state, images)
    # Brute force: each of the n views at r_sel through the networks, each pair's loss.
    render = jax.jit(augment.render_views, static_argnums=(3, 4, 5, 6))  # eager: op by op
    views = render(rng, images, 5.0, 8, exp.method.view_configs, n, exp.dtype)
    forward = jax.jit(lambda p, b, x: step.apply_train(exp.method.net, p, b, x)[0])
    online = [forward(state.params, state.batch_stats, views[v]) for v in range(n)]
    target = [forward(state.target_params, state.target_batch_stats, views[v]) for v in range(n)]
    # DINO's two recipes differ: the candidates are the pairs of one view of each (pairs=auto).
    assert spec.cross_pairs
    candidates = [(i, j) for i in range(0, n, 2) for j in range(1, n, 2)]
    losses = {(i, j): np.asarray(exp.method.pair_loss(online[i], online[j], target[i], target[j],
                                                      state.method_state, state.step))
              for i, j in candidates}
    chosen = []
    for s in range(images.shape[0]):
        best = max(losses, key=lambda pair: losses[pair][s])
        picked = set(np.flatnonzero(~np.asarray(selection.unselected[:, s])).tolist())
        assert picked == set(best), s
        for view, trained in zip(best, selection.pair[:, s]):
            np.testing.assert_allclose(trained, views[view, s], atol=1e-5)  # two programs
        chosen.append(best)
    assert len(set(chosen)) > 1  # the choice varies per sample


@pytest.mark.parametrize("key,value,fix,progressive", [  # progressive: keeps ResNets' rule
    ("progressive.r_min", 10, "--config.progressive.r_min=8 or 12", dict(bucket_step=2)),
    ("progressive.bucket_step", 6, "--config.progressive.bucket_step=4 or 8", dict(r_min=12)),
    ("progressive.r_max", 18, "--config.progressive.r_max=16 or 20", dict(schedule="fixed")),
    ("hard_augment.r_sel", 6, "--config.hard_augment.r_sel=4 or 8", {}),
    ("eval.resolution", 2, "--config.eval.resolution=4", {}),
    ("model.img_size", 30, "--config.model.img_size=28 or 32", {}),
])
def test_resolutions_that_do_not_tile_into_patches_are_config_errors(key, value, fix,
                                                                     progressive):
    def config(arch):
        c = vit_config() if arch == "vit" else tiny_config()
        c.progressive.update(schedule="super_progressive", r_min=8, r_max=24, bucket_step=4)
        c.progressive.update(progressive)
        c.hard_augment.enabled = True
        group, leaf = key.split(".")
        c[group][leaf] = value
        return c
    config_schema.validate(vit_config())  # the base ViT config is valid
    with pytest.raises(ConfigError) as e:
        config_schema.validate(config("vit"))
    message = str(e.value)
    assert "\n" not in message and fix in message
    assert f"{key}={value} is not a multiple of model.patch_size=4" in message
    config_schema.validate(config("resnet"))  # ResNets take any side
    c = vit_config()
    c.model.patch_size = 0
    with pytest.raises(ConfigError, match="model.patch_size=0 must be positive"):
        config_schema.validate(c)


def test_vit_predicted_speedup_comes_from_measured_flops_per_bucket():
    c = vit_config("simsiam")  # SimSiam's projector is sized by ctx.feature_dim and has BN
    c.optim.update(schedule="f1clr", warmup_epochs=0.5)
    # From 2 tokens (the class token and one patch) to 17: far from cost ~ r^2.
    c.progressive.update(schedule="super_progressive", r_min=4, r_max=16, bucket_step=4)
    exp = tiny_experiment(c, dtype=jnp.bfloat16)
    plan = exp.plan
    speedup = costs.predicted_speedup(c, plan)
    assert plan.resolutions == (4, 8, 12, 16) and speedup.basis == "measured_flops"

    backbone = vit.get_vit("vit_micro", patch_size=4, img_size=16)
    shapes = jax.eval_shape(lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))))
    forward = jax.jit(lambda v, x: backbone.apply(v, x))
    flops = {r: forward.lower(shapes, jax.ShapeDtypeStruct((1, r, r, 3), jnp.float32))
             .cost_analysis()["flops"] for r in plan.resolutions}
    steps = plan.steps_by_resolution()
    expected = (sum(n * flops[16] for n in steps.values())
                / sum(n * flops[r] for r, n in steps.items()))
    assert speedup.predicted == pytest.approx(expected, rel=1e-9)
    assert abs(speedup.predicted - speedup.eq9) > 0.02
    assert f"{expected:.2f}x (eq. 9's r^2 model: {speedup.eq9:.2f}x)" in costs.Forecast(
        speedup, None, 0.0, None).describe()

    resnet = c.copy_and_resolve_references()
    resnet.model.arch = "resnet10"  # tiny_config's ResNet
    resnet_speedup = costs.predicted_speedup(resnet, tiny_experiment(resnet).plan)
    assert resnet_speedup.basis == "eq9_r2" and resnet_speedup.predicted == resnet_speedup.eq9

    # One backbone registry: the ViT's features (class token, width 48) size the heads; bf16
    # compute keeps float32 parameters, as for ResNets.
    assert backbones.feature_dim(c.model) == 48
    params = exp.abstract_state.params
    assert params["projector"]["Dense_0"]["Dense_0"]["kernel"].shape == (48, 48)
    assert params["backbone"]["pos_embed"].shape == (1, 1 + 4 * 4, 48)  # r_max's grid
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    feat = jax.eval_shape(lambda v, x: exp.method.net.apply(v, x, method=exp.method.net.features),
                          exp.abstract_variables, jnp.zeros((2, 24, 24, 3)))
    assert feat.shape == (2, 48) and feat.dtype == jnp.float32
    # The whole train step traces, SimSiam's (BN heads on a backbone without batch statistics)
    # and DINO's (a teacher, no BN at all); launch.py trains SimSiam, the Hard Augment test
    # runs DINO's selection.
    spec = exp.spec(8, 16)
    images = jax.ShapeDtypeStruct((spec.local_batch, 16, 16, 3), jnp.uint8)
    new_state, metrics = jax.eval_shape(exp.step_fn(spec), exp.abstract_state, images, 5.0)
    assert "backbone" not in new_state.batch_stats and "projector" in new_state.batch_stats
    assert metrics["loss"].dtype == jnp.float32
    dino = tiny_experiment(vit_config("dino"), dtype=jnp.bfloat16)
    new_state, metrics = jax.eval_shape(dino.step_fn(dino.spec(16, 16)), dino.abstract_state,
                                        images, 5.0)
    assert new_state.batch_stats == {} and metrics["loss"].dtype == jnp.float32


def test_resuming_a_vit_may_not_move_the_position_embeddings_grid(tmp_path):
    """With model.img_size=0 the position embedding is stored for progressive.r_max: a resumed run
    that changes r_max would not fit its checkpoint (a ResNet's would)."""
    c = vit_config()
    (tmp_path / "config.json").write_text(c.to_json_best_effort())
    c.progressive.r_max = 32
    with pytest.raises(ConfigError, match="progressive.r_max=16 cannot change on resume"):
        config_schema.resume_changes(str(tmp_path), c)
    c.model.arch = "resnet10"
    (tmp_path / "config.json").write_text(c.to_json_best_effort())
    c.progressive.r_max = 24
    assert config_schema.resume_changes(str(tmp_path), c) == {"progressive.r_max": (32, 24)}
