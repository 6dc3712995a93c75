"""Multi-crop (multicrop.py): DINO over 2 global + N local crops against a PyTorch transcription
of DINO's DINOLoss, on given outputs and through the train step (the student over every crop, the
teacher over the global views); the pair-loss methods' local crops as extra targets against brute
force, alone and through the step; the local crops' keys, side under Super Progressive Learning
(one compiled step per bucket), augmentation recipes, validation and cost."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import put_batch, tiny_config, tiny_experiment, tiny_images

from effssl_jax import augment, config_schema, costs, experiment, multicrop, train
from effssl_jax.errors import ConfigError
from effssl_jax.methods import recipes
from effssl_jax.step import apply_train

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = dict(rtol=1e-5, atol=1e-6)
PROTOS = 64


class DINOLoss(torch.nn.Module):
    """facebookresearch/dino main_dino.py:363-416 (commit 7c446df), transcribed: one process
    (the all_reduce of update_center is the identity), and the teacher temperature given rather
    than looked up by epoch in its schedule (:388)."""

    def __init__(self, out_dim, ncrops, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim, dtype=torch.float64))

    def forward(self, student_output, teacher_output, temp):
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss = 0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
        batch_center = batch_center / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def dino_config(count=3, resolution=8, **local):
    c = tiny_config("dino")
    c.dino.update(proj_hidden=32, bottleneck_dim=16, num_prototypes=PROTOS,
                  warmup_teacher_temperature=0.04, teacher_temperature=0.07,
                  warmup_teacher_temperature_epochs=1)
    c.augment.local_crops.update(count=count, resolution=resolution, **local)
    return c


def torch_dino(method, student, teacher, center, temperature):
    """(loss, d loss / d student outputs, new centre) of DINOLoss on outputs [crops, B, K]."""
    loss_fn = DINOLoss(PROTOS, len(student), method.student_temperature, method.center_momentum)
    loss_fn.center = torch.tensor(np.asarray(center, np.float64))[None]
    s = torch.tensor(np.concatenate(np.asarray(student, np.float64)), requires_grad=True)
    loss = loss_fn(s, torch.tensor(np.concatenate(np.asarray(teacher, np.float64))),
                   float(temperature))
    loss.backward()
    return (loss.item(), s.grad.numpy().reshape(np.shape(student)),
            loss_fn.center.numpy()[0])


@pytest.mark.parametrize("local_crops", [0, 1, 6])
def test_dino_multicrop_loss_equals_dino_loss(local_crops):
    """The loss, its gradient w.r.t. every student output and the centre's update on the same
    outputs, in float64; with no local crop, DINO's pair loss."""
    batch, step = 5, 3
    method = experiment.build_method(dino_config(), jnp.float64, 4, 40)
    rng = np.random.default_rng(local_crops)
    student = rng.standard_normal((2 + local_crops, batch, PROTOS))
    teacher = rng.standard_normal((2, batch, PROTOS))
    center = rng.standard_normal(PROTOS) * 0.1
    temperature = float(method.teacher_temperature(step))
    assert 0.04 < temperature < 0.07  # warming up: the step's temperature is the one used
    with jax.enable_x64(True):
        state = {"center": jnp.asarray(center)}
        as_outputs = lambda x: [{"proj": jnp.asarray(o)} for o in x]

        def loss(s):
            return method.multicrop_loss(as_outputs(s), as_outputs(teacher), state, step).mean()

        got, grad = jax.value_and_grad(loss)(jnp.asarray(student))
        t_a, t_b = as_outputs(teacher)
        new_center = method.update_state(state, None, None, t_a, t_b, step)["center"]
        if local_crops == 0:
            s_a, s_b = as_outputs(student)
            pair = method.pair_loss(s_a, s_b, t_a, t_b, state, step).mean()
            assert float(pair) == pytest.approx(float(got), rel=1e-12)
    want, want_grad, want_center = torch_dino(method, student, teacher, center, temperature)
    assert float(got) == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(new_center), want_center, rtol=1e-12)


def step_reference(exp, state, images, magnitude):
    """What a step with local crops computes, from the crops it renders (the global views from
    fold_in(rng, v), crop k from fold_in(fold_in(rng, LOCAL_STREAM), k)): the student's outputs
    of every crop (each global view its own BN batch, the local crops one batch concatenated
    crop by crop as DINO's MultiCropWrapper does), the teacher's of the global views, as
    functions of the student's parameters."""
    spec = exp.spec(16, 16)
    local, method = spec.local_crops, exp.method
    rng = jax.random.fold_in(state.rng, state.step)
    views = augment.render_views(rng, images, magnitude, 16, method.view_configs, 2, exp.dtype)
    local_rng = jax.random.fold_in(rng, multicrop.LOCAL_STREAM)
    crops = jnp.stack([augment.normalize(augment.augment_batch(
        jax.random.fold_in(local_rng, k), images, local.resolution, magnitude,
        local.view_configs[k % 2])).astype(exp.dtype) for k in range(local.count)])

    def student(params):
        out_a, stats = apply_train(method.net, params, state.batch_stats, views[0])
        out_b, stats = apply_train(method.net, params, stats, views[1])
        together, _ = apply_train(method.net, params, stats, jnp.concatenate(crops))
        return [out_a, out_b] + [jax.tree.map(lambda x, k=k: x[k * len(images):(k + 1) * len(
            images)], together) for k in range(local.count)]

    teacher = [apply_train(method.target_net, state.target_params, state.target_batch_stats,
                           v)[0] for v in views]
    return student, teacher, crops, views


def test_dino_step_trains_the_student_on_every_crop_as_dino():
    """The step's loss is DINOLoss (torch) of the student over the 2 global + 3 local crops and
    the teacher over the 2 global ones; its gradient norm is that of the same forward through
    the method's multicrop_loss (which the test above checks against DINOLoss), so the local
    crops are trained; the centre moves to the teacher's global outputs. On 8 devices, float64."""
    with jax.enable_x64(True):
        exp = tiny_experiment(dino_config(), jax.devices(), jnp.float64)
        spec = exp.spec(16, 16)
        assert spec.local_crops == multicrop.LocalCrops(3, 8, spec.local_crops.view_configs)
        state = exp.init(jax.random.key(0))
        images = put_batch(tiny_images(), exp.mesh)

        @jax.jit
        def reference(state, images, magnitude):
            student, teacher, crops, _ = step_reference(exp, state, images, magnitude)
            loss = lambda p: exp.method.multicrop_loss(student(p), teacher, state.method_state,
                                                       state.step).mean()
            grads = jax.grad(loss)(state.params)
            grad_norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
            return student(state.params), teacher, crops, grad_norm

        magnitude = np.float32(5.0)  # as the train loop passes it
        outputs, teacher, crops, grad_norm = jax.device_get(reference(state, images, magnitude))
        center = np.asarray(state.method_state["center"])
        new_state, metrics = exp.compiled_steps().get(spec)(state, images, magnitude)
        metrics, new_center = jax.device_get((metrics, new_state.method_state["center"]))
    assert crops.shape == (3, 16, 8, 8, 3) and metrics["healthy"]
    want, _, want_center = torch_dino(
        exp.method, [o["proj"] for o in outputs], [t["proj"] for t in teacher], center,
        exp.method.teacher_temperature(0))
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-9)
    assert float(metrics["grad_norm"]) == pytest.approx(float(grad_norm), rel=1e-6)
    np.testing.assert_allclose(new_center, want_center, rtol=1e-9, atol=1e-12)
    # Without the local crops DINO's loss is another: they count.
    pair, _, pair_center = torch_dino(exp.method, [o["proj"] for o in outputs[:2]],
                                      [t["proj"] for t in teacher], center,
                                      exp.method.teacher_temperature(0))
    assert abs(pair - want) > 1e-3
    np.testing.assert_allclose(pair_center, want_center, rtol=1e-12)  # the teacher's only


def pair_loss_method(name):
    c = tiny_config(name)
    c.byol.update(proj_hidden=32, proj_dim=16, pred_hidden=32)
    c.simclr.update(proj_hidden=32, proj_dim=16)
    c.mocov2plus.update(proj_hidden=32, proj_dim=16, queue_size=32)
    c.mocov3.update(proj_hidden=32, proj_dim=16, pred_hidden=32)
    return c


@pytest.mark.parametrize("name", ["simsiam", "byol", "simclr", "mocov2plus", "mocov3"])
def test_extra_target_loss_is_the_mean_over_local_crops(name):
    """Table 9's multi-crop row for every pair-loss method: mean over the local crops k of
    0.5 (L(a, k) + L(b, k)), computed crop by crop in a Python loop."""
    method = experiment.build_method(pair_loss_method(name), jnp.float32, 4, 40)
    state = method.init_state()
    count, batch, dim = 4, 8, 16
    keys = iter(jax.random.split(jax.random.key(1), 16))
    outputs = lambda *shape: {k: jax.random.normal(next(keys), (*shape, dim))
                              for k in ("proj", "pred")}
    a, b = outputs(batch), outputs(batch)
    online = outputs(count, batch)
    has_target = method.target_net is not None
    ta, tb = (outputs(batch), outputs(batch)) if has_target else (None, None)
    target = outputs(count, batch) if has_target else None
    loss = lambda oa, ob, x, y: method.pair_loss(oa, ob, x, y, state, 0)
    got = multicrop.extra_target_loss(loss, a, b, ta, tb, online, target)
    take = lambda tree, k: None if tree is None else {key: v[k] for key, v in tree.items()}
    terms = [0.5 * (loss(a, take(online, k), ta, take(target, k))
                    + loss(b, take(online, k), tb, take(target, k))) for k in range(count)]
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, np.mean(np.stack(terms), axis=0), rtol=1e-5, atol=1e-6)


def test_byol_step_uses_local_crops_as_constant_extra_targets():
    """BYOL's step with 2 local crops: its loss is the pair loss plus the extra-target mean over
    the crops, with each crop's online and target outputs computed on its own BN batch and
    held constant (the gradient norm is that of this loss with the crops' outputs fixed)."""
    c = pair_loss_method("byol")
    c.augment.local_crops.update(count=2, resolution=8)
    with jax.enable_x64(True):
        exp = tiny_experiment(c, dtype=jnp.float64)
        spec = exp.spec(16, 16)
        state = exp.init(jax.random.key(0))
        images = put_batch(tiny_images(), exp.mesh)
        method = exp.method

        @jax.jit
        def reference(state, images, magnitude):
            _, (ta, tb), crops, views = step_reference(exp, state, images, magnitude)
            per_crop = lambda net, p, s: [apply_train(net, p, s, x)[0] for x in crops]
            online = per_crop(method.net, state.params, state.batch_stats)
            target = per_crop(method.target_net, state.target_params, state.target_batch_stats)
            pair = lambda oa, ob, x, y: method.pair_loss(oa, ob, x, y, state.method_state, 0)

            def loss(params):
                out_a, stats = apply_train(method.net, params, state.batch_stats, views[0])
                out_b, _ = apply_train(method.net, params, stats, views[1])
                extra = sum(0.5 * (pair(out_a, o, ta, t) + pair(out_b, o, tb, t))
                            for o, t in zip(online, target)) / len(crops)
                return (pair(out_a, out_b, ta, tb) + extra).mean()

            value, grads = jax.value_and_grad(loss)(state.params)
            return value, jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))

        magnitude = np.float32(5.0)  # as the train loop passes it
        want, grad_norm = jax.device_get(reference(state, images, magnitude))
        _, metrics = exp.compiled_steps().get(spec)(state, images, magnitude)
        metrics = jax.device_get(metrics)
    assert float(metrics["loss"]) == pytest.approx(float(want), rel=1e-9)
    assert float(metrics["grad_norm"]) == pytest.approx(float(grad_norm), rel=1e-6)


def test_local_crop_keys_do_not_collide_with_the_views():
    rng = jax.random.key(7)
    local = multicrop.local_rng(rng)
    views = {tuple(np.asarray(jax.random.key_data(jax.random.fold_in(rng, v))).tolist())
             for v in range(64)}
    crops = {tuple(np.asarray(jax.random.key_data(jax.random.fold_in(local, k))).tolist())
             for k in range(64)}
    assert len(views) == len(crops) == 64 and not views & crops
    images = tiny_images(4)
    cfg = augment.ViewConfig()
    spec = multicrop.LocalCrops(2, 16, (cfg, cfg))
    rendered = multicrop.render(rng, images, 5.0, spec, jnp.float32)
    globals_ = augment.render_views(rng, images, 5.0, 16, (cfg, cfg), 2, jnp.float32)
    assert rendered.shape == globals_.shape == (2, 4, 16, 16, 3)
    assert not np.allclose(rendered, globals_)


def test_flatten_and_split_round_trip_crop_by_crop():
    crops = jnp.arange(3 * 4 * 2, dtype=jnp.float32).reshape(3, 4, 2)
    flat = multicrop.flatten(crops)
    assert flat.shape == (12, 2)
    back = multicrop.split({"x": flat}, 3)
    for k in range(3):
        np.testing.assert_array_equal(back[k]["x"], crops[k])


@pytest.mark.parametrize("multiple, sides", [
    (1, {96: 41, 128: 55, 160: 69, 192: 82, 224: 96}),  # ResNet: any side
    (16, {96: 48, 128: 48, 160: 64, 192: 80, 224: 96}),  # ViT-S/16: whole patches
])
def test_local_side_follows_the_step_resolution(multiple, sides):
    assert {r: multicrop.local_resolution(96, r, 224, multiple) for r in sides} == sides
    assert multicrop.local_resolution(8, 8, 224) == multicrop.MIN_SIDE
    assert multicrop.local_resolution(8, 8, 224, 16) == 16


def test_spec_carries_the_local_crops_of_each_bucket():
    c = dino_config(count=2, resolution=12)
    c.progressive.update(schedule="super_progressive", r_min=8, bucket_step=8)
    exp = tiny_experiment(c)
    s16, s8 = exp.spec(16, 16), exp.spec(8, 16)
    assert (s16.local_crops.count, s16.local_crops.resolution) == (2, 12)
    assert (s8.local_crops.count, s8.local_crops.resolution) == (2, 6)
    assert s16 != dataclasses.replace(s16, local_crops=s8.local_crops)  # part of the compile key
    assert exp.spec(16, 16) == s16 and hash(exp.spec(16, 16)) == hash(s16)
    c.augment.local_crops.count = 0
    assert tiny_experiment(c).spec(16, 16).local_crops is None


def test_super_progressive_run_with_local_crops_compiles_once_per_bucket(tmp_path):
    """DINO with 2 local crops under SP: a 16 px warm-up, then the 8 and 16 px buckets (local
    crops of 6 and 12 px): two distinct steps, each compiled once."""
    c = dino_config(count=2, resolution=12)
    c.dataset, c.synthetic_train_size, c.synthetic_test_size = "synthetic", 32, 16
    c.epochs, c.log_every_steps, c.progress_bar = 4, 1, False
    c.optim.schedule, c.optim.warmup_epochs = "f1clr", 1
    c.progressive.update(schedule="super_progressive", r_min=8, bucket_step=8)
    c.eval.update(every_epochs=0, at_init=False)
    summary = train.run(c, str(tmp_path))
    assert summary["steps"] == 8 and summary["compiled_steps"] == 2
    assert summary["steps_by_resolution"] == {"16": 2 + 3, "8": 3}
    assert set(summary["gflops_per_step"]) == {"8", "16"}


# --- recipes ----------------------------------------------------------------------------------

def augment_config(method, recipe="method", **local):
    c = config_schema.default_config()
    c.method = method
    c.augment.recipe = recipe
    c.augment.local_crops.update(local)
    return c


def test_dino_global_scale_depends_on_local_crops():
    """main_dino.py:108-117: global crops of 0.4 - 1 beside local crops, 0.14 - 1 without."""
    without = recipes.view_configs("dino", augment_config("dino").augment)
    with_local = recipes.view_configs("dino", augment_config("dino", count=8).augment)
    assert [v.crop_scale for v in without] == [(0.14, 1.0)] * 2
    assert [v.crop_scale for v in with_local] == [(0.4, 1.0)] * 2
    assert [dataclasses.replace(v, crop_scale=(0.14, 1.0)) for v in with_local] == list(without)
    # The other methods' global views do not depend on local crops.
    assert (recipes.view_configs("byol", augment_config("byol", count=8).augment)
            == recipes.view_configs("byol", augment_config("byol").augment))


def test_dino_local_crops_get_dinos_local_transform():
    """main_dino.py:449-456: the global crops' flip / jitter / grey, blur p 0.5 of 0.1 - 2 px at
    96 px, no solarisation, the local scale."""
    a = augment_config("dino", count=8, scale=(0.05, 0.3)).augment
    views = recipes.view_configs("dino", a)
    local, second = recipes.local_view_configs("dino", a, views)
    assert local == second
    assert (local.crop_scale, local.blur_prob, local.solarize_prob) == ((0.05, 0.3), 0.5, 0.0)
    assert (local.brightness, local.contrast, local.saturation, local.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (local.jitter_prob, local.gray_prob, local.flip_prob) == (0.8, 0.2, 0.5)
    sigma_at_96 = tuple(s * 96 / 224 for s in local.blur_sigma)  # augment_image's scaling
    assert sigma_at_96 == pytest.approx((0.1, 2.0))


@pytest.mark.parametrize("method, recipe", [("simclr", "method"), ("byol", "method"),
                                            ("dino", "paper")])
def test_other_local_crops_are_the_global_views_at_the_local_scale(method, recipe):
    """SwAV's multi-crop (src/multicropdataset.py:37-52): one transform for every crop."""
    a = augment_config(method, recipe, count=4, scale=(0.05, 0.2)).augment
    views = recipes.view_configs(method, a)
    assert recipes.local_view_configs(method, a, views) == tuple(
        dataclasses.replace(v, crop_scale=(0.05, 0.2)) for v in views)


def load(recipe):
    return config_schema.from_recipe(os.path.join(ROOT, "configs", f"{recipe}.py"))


@pytest.mark.parametrize("recipe, local_scale, global_scale", [
    # README.md:207, DINO's ResNet-50 command: --global_crops_scale 0.14 1
    # --local_crops_scale 0.05 0.14, 8 local crops (main_dino.py:112's default)
    ("dino_baseline", (0.05, 0.14), (0.14, 1.0)), ("dino_f1clr", (0.05, 0.14), (0.14, 1.0)),
    # main_dino.py's defaults (:108, :112, :115), README.md:165's ViT-S/16 command
    ("dino_vit_baseline", (0.05, 0.4), (0.4, 1.0)), ("dino_vit_f1clr", (0.05, 0.4), (0.4, 1.0)),
])
def test_dino_recipes_use_dinos_local_crops(recipe, local_scale, global_scale):
    c = load(recipe)
    config_schema.validate(c, num_devices=8)
    local = c.augment.local_crops
    assert (local.count, local.resolution, tuple(local.scale)) == (8, 96, local_scale)
    views = recipes.view_configs("dino", c.augment)
    assert [v.crop_scale for v in views] == [global_scale] * 2


# --- validation and cost ----------------------------------------------------------------------

@pytest.mark.parametrize("local, named", [
    ({"count": -1}, "augment.local_crops.count=-1 must be an integer >= 0"),
    ({"count": 2, "resolution": 0}, "augment.local_crops.resolution=0 must lie in (0, "
                                    "progressive.r_max=224]"),
    ({"count": 2, "resolution": 256}, "augment.local_crops.resolution=256 must lie in"),
    ({"count": 2, "scale": (0.5, 0.1)}, "augment.local_crops.scale=(0.5, 0.1) must be (min, max)"),
    ({"count": 2, "scale": (0.5,)}, "augment.local_crops.scale=(0.5,) must be (min, max)"),
])
def test_bad_local_crops_get_a_one_line_error(local, named):
    c = augment_config("dino", **local)
    with pytest.raises(ConfigError) as err:
        config_schema.validate(c)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert "--config.augment.local_crops." in str(err.value)


def test_vit_local_side_must_be_whole_patches():
    c = load("dino_vit_baseline")
    c.augment.local_crops.update(count=8, resolution=100)
    with pytest.raises(ConfigError, match=r"augment.local_crops.resolution=100 is not a multiple "
                                          r"of model.patch_size=16.*96 or 112"):
        config_schema.validate(c, num_devices=8)
    c.augment.local_crops.count = 0  # off: its side is not used
    config_schema.validate(c, num_devices=8)


@pytest.mark.parametrize("name", ["dino", "byol"])
def test_paper_cost_counts_the_local_crops(name):
    """DINO trains its student on each local crop (forward + backward: 2 forwards); the
    pair-loss methods forward each through the online and target networks without gradients."""
    c = dino_config() if name == "dino" else pair_loss_method(name)
    c.augment.local_crops.update(count=3, resolution=8)
    plain = c.copy_and_resolve_references()
    plain.augment.local_crops.count = 0
    with_crops, without = costs.PaperCost(c), costs.PaperCost(plain)
    online, target = with_crops._forwards(8)
    per_crop = 2 * online if name == "dino" else online + target
    assert target > 0 and online > 0
    assert with_crops.per_image(16) - without.per_image(16) == pytest.approx(3 * per_crop)
    # Under SP the crops shrink with the step (12 px at r_max 16 -> 6 px at 8).
    c.augment.local_crops.resolution = 12
    online6, target6 = costs.PaperCost(c)._forwards(6)
    extra = 3 * (2 * online6 if name == "dino" else online6 + target6)
    assert costs.PaperCost(c).per_image(8) - without.per_image(8) == pytest.approx(extra)
