"""The same SSL recipe trained by this library and by a PyTorch peer, side by side.

    python benchmarks/vs_torch_training.py --method simclr --framework jax --seed 0
    python benchmarks/vs_torch_training.py --method simclr --framework torch --seed 0
    ...                                                    (simsiam; seeds 0 and 1)
    python benchmarks/vs_torch_training.py --table > results/vs_torch_training/README.md

Both sides train on the shared Imagenette (../shared/data/imagenette2-160) at 64 px with one
recipe, `recipe(method, seed, epochs)`, that each side reads its settings from:
- the same uint8 batches in the same order: the PyTorch side iterates the library's own loader
  (images decoded once at 64 px, `data/order.py`'s per-seed order), so the host resize before the
  random crop is common to both and is not a difference between them;
- torchvision ResNet-18 (ImageNet stem) against the library's ResNet-18 (torchvision's layout and
  initialisation), the method's heads at the library's widths, its loss, and batch norm over each
  view separately (the library forwards the two views one after the other, as the PyTorch
  peer does);
- torchvision v2 augmentations with the library's parameters (ViewConfig: crop scale, colour
  jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale 0.2, blur p 0.5 with the kernel and sigma the
  library uses at 64 px, flip), applied per image on the host; the library's run on the device;
- SGD with momentum (PyTorch's update rule), weight decay on conv/linear kernels only, and the
  per-step learning rate of the library's schedule;
- the kNN monitor (k=200, T=0.1) on the same centre-cropped eval inputs, computed by the same
  function on each side's features.

Where a gap comes from: `--first-step` (one step's loss and gradient on the same weights),
`--same-weights-steps N [--float64]` (N of the library's train steps next to PyTorch's from the
same weights on the same views), `--augment-stats` (statistics of both sides' views), and
`--framework torch --views library|torchvision-float` (the PyTorch run on the library's views, or
on torchvision v2 applied to float images, which does not round to uint8 after each op).

Each run writes runs/vs_torch_training/METHOD_FRAMEWORK_sSEED.json (the mean loss of each quarter
of an epoch, kNN after each epoch, train seconds per epoch); `--table` prints them side by side
with the spread over seeds.
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

IMAGENETTE = os.path.join(ROOT, "..", "shared", "data", "imagenette2-160")
OUT = os.path.join(ROOT, "runs", "vs_torch_training")


def recipe(method: str, seed: int, epochs: int):
    """The one config both sides read."""
    from effssl_jax.config_schema import default_config
    c = default_config()
    c.name, c.method, c.seed = f"vs_torch_{method}", method, seed
    c.dataset = f"folder:{IMAGENETTE}"
    c.data.loader = "memory"
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet18", 64, False
    c.progressive.r_max = 64
    c.batch_size, c.epochs = 128, epochs
    c.optim.schedule, c.optim.weight_decay = "cosine", 5e-4
    c.optim.lr = {"simclr": 0.3, "simsiam": 0.05}[method]
    c.augment.recipe = "paper"  # SimSiam's augmentation for both methods, as results/ measured
    c.simclr.update(proj_hidden=2048, proj_dim=128, temperature=0.2)
    c.simsiam.update(proj_dim=2048, proj_hidden=0, proj_layers=3, pred_hidden=512)
    # kNN after every epoch on fixed 2000-image subsets of the bank (train) and eval splits, the
    # same subsets on both sides (seeded by the run's seed), at a fifth of a full-split kNN's cost.
    c.eval.update(every_epochs=1, knn_k=200, knn_temperature=0.1, crop_fraction=1.0,
                  at_init=True, online_subset=2000)
    c.log_every_steps, c.checkpoint_every_steps, c.progress_bar = 1, 10_000, False
    c.viewers.tensorboard = False
    return c


POINTS = 4  # mean losses reported per epoch


def _binned(losses: list[float], steps_per_epoch: int) -> list[float]:
    """The mean loss of each 1/POINTS of an epoch (steps in order, the last bin takes the rest)."""
    edges = [round(i * steps_per_epoch / POINTS) for i in range(POINTS + 1)]
    out = []
    for e in range(0, len(losses), steps_per_epoch):
        epoch = losses[e:e + steps_per_epoch]
        out += [float(np.mean(epoch[a:b])) for a, b in zip(edges, edges[1:])]
    return out


def eval_epochs(config) -> list[int]:
    every = int(config.eval.every_epochs)
    return sorted({0, *range(every, config.epochs + 1, every), config.epochs})


# ----------------------------------------------------------------------------------------------
# The library's side: launch.py's train.run, read back from metrics.jsonl.
# ----------------------------------------------------------------------------------------------

def run_jax(config, workdir: str) -> dict:
    from effssl_jax import train
    train.run(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r for r in records if "loss" in r]
    per_epoch = max(r["step"] for r in steps) // config.epochs
    loss = _binned([r["loss"] for r in sorted(steps, key=lambda r: r["step"])], per_epoch)
    seconds = [float(sum(config.batch_size / r["images_per_sec"] for r in steps
                         if (r["step"] - 1) // per_epoch == e)) for e in range(config.epochs)]
    knn = {str(round(r["step"] / per_epoch)): r["knn_top1"] for r in records if "knn_top1" in r}
    return {"loss": loss, "knn": knn, "seconds": seconds}


# ----------------------------------------------------------------------------------------------
# The PyTorch peer.
# ----------------------------------------------------------------------------------------------

def _torch_nets(config):
    import torch
    import torchvision
    from torch import nn

    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    feat = 512
    if config.method == "simclr":
        s = config.simclr
        projector = nn.Sequential(nn.Linear(feat, s.proj_hidden), nn.ReLU(),
                                  nn.Linear(s.proj_hidden, s.proj_dim))
        predictor = None
    else:  # simsiam, as models/heads.py MLP (BN momentum 0.1 = flax's 0.9)
        s = config.simsiam
        hidden = s.proj_hidden or feat
        layers, width = [], feat
        for _ in range(s.proj_layers - 1):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        projector = nn.Sequential(*layers, nn.Linear(width, s.proj_dim, bias=False),
                                  nn.BatchNorm1d(s.proj_dim, affine=False))
        predictor = nn.Sequential(nn.Linear(s.proj_dim, s.pred_hidden, bias=False),
                                  nn.BatchNorm1d(s.pred_hidden), nn.ReLU(),
                                  nn.Linear(s.pred_hidden, s.proj_dim))
    return torch.nn.ModuleDict({"backbone": backbone, "projector": projector,
                                **({"predictor": predictor} if predictor else {})})


def _torch_loss(config, out_a, out_b):
    import torch
    import torch.nn.functional as F
    if config.method == "simclr":  # methods/simclr.py nt_xent: mean over the 2B anchors
        z = F.normalize(torch.cat([out_a["proj"], out_b["proj"]]), dim=1)
        b = out_a["proj"].shape[0]
        logits = z @ z.T / config.simclr.temperature
        logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        return F.cross_entropy(logits, target)
    d = lambda p, z: -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1).mean()
    return 0.5 * (d(out_a["pred"], out_b["proj"]) + d(out_b["pred"], out_a["proj"]))


def _torch_augment(config, size: int):
    """torchvision v2 with augment.ViewConfig's parameters at the library's standard magnitude."""
    import torch
    from torchvision.transforms import v2

    from effssl_jax import augment, methods
    v = methods.view_configs(config)[0]  # both views alike (SimCLR, SimSiam)
    sigma = tuple(s * size / 224 for s in v.blur_sigma)  # as augment_image rescales it
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=v.crop_scale, ratio=v.crop_ratio, antialias=True),
        v2.RandomApply([v2.ColorJitter(v.brightness, v.contrast, v.saturation, v.hue)],
                       p=v.jitter_prob),
        v2.RandomGrayscale(p=v.gray_prob),
        v2.RandomApply([v2.GaussianBlur(augment.blur_kernel_size(size), sigma=sigma)],
                       p=v.blur_prob),
        v2.RandomHorizontalFlip(p=v.flip_prob),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(augment.IMAGENET_MEAN, augment.IMAGENET_STD),
    ])


def _library_views(config, size: int):
    """(step, uint8 batch) -> the library's two normalised views [2, B, size, size, 3], with
    the method's view configs and a key per step from config.seed."""
    import jax
    import jax.numpy as jnp

    from effssl_jax import augment, experiment
    view_configs = experiment.build_method(config, jnp.float32, 1, 1).view_configs
    render = jax.jit(lambda rng, x: augment.render_views(rng, x, augment.STANDARD_MAGNITUDE,
                                                         size, view_configs, 2, jnp.float32))
    key = jax.random.key(config.seed)
    return lambda step, batch: render(jax.random.fold_in(key, step), jnp.asarray(batch))


@functools.lru_cache
def _eval_transform(size: int, crop_fraction: float):
    """The library's eval transform (centre_resize + normalize), jitted once per setting."""
    import jax

    from effssl_jax import augment
    return jax.jit(lambda x: augment.normalize(augment.center_resize(x, size, crop_fraction)))


def _torch_features(nets, images: np.ndarray, config, size: int) -> np.ndarray:
    """Eval-mode backbone features of the library's eval transform (centre_resize + normalize),
    L2-normalised."""
    import torch
    prep = _eval_transform(size, config.eval.crop_fraction)
    nets.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), config.eval.batch_size):
            x = np.asarray(prep(images[i:i + config.eval.batch_size]))
            f = nets["backbone"](torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
            out.append(torch.nn.functional.normalize(f, dim=1).numpy())
    nets.train()
    return np.concatenate(out)


def _torch_sgd(config, nets):
    """SGD with momentum, weight decay on conv / linear kernels only (the library's default)."""
    import torch
    decay = [p for p in nets.parameters() if p.ndim > 1]
    no_decay = [p for p in nets.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": config.optim.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=0.0,
                           momentum=config.optim.momentum)


def _torch_forward_loss(config, nets, views):
    """The method's loss on two views [B, 3, H, W], batch norm over each view as the library's
    step does."""
    outs = []
    for v in views:
        out = {"proj": nets["projector"](nets["backbone"](v))}
        if "predictor" in nets:
            out["pred"] = nets["predictor"](out["proj"])
        outs.append(out)
    return _torch_loss(config, *outs)


def _torch_step(config, nets, opt, views, lr, momentum) -> float:
    """One SGD step on two views [B, 3, H, W] at this lr and momentum. Returns the loss."""
    for group in opt.param_groups:
        group["lr"], group["momentum"] = float(lr), float(momentum)
    loss = _torch_forward_loss(config, nets, views)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss)


def run_torch(config, threads: int, views: str = "torchvision") -> dict:
    """The PyTorch peer's run. views='library': it trains on the library's views (the on-device
    augmentations, rendered per step as the library's step does) instead of torchvision v2's,
    to tell a difference of the augmentations from one of the training; 'torchvision-float':
    torchvision v2 on float images, so that no op rounds to uint8 as it does on uint8 input."""
    import torch

    from effssl_jax import plan as plan_lib
    from effssl_jax.data import pipeline
    from effssl_jax.evaluate.knn import knn_accuracy

    torch.manual_seed(config.seed)
    torch.set_num_threads(threads)
    size = config.progressive.r_max
    train, bank, eval_split = pipeline.open_run_data(config, size)
    plan = plan_lib.make_plan(config, len(train))
    loader = pipeline.make_loader(config, train, plan, mesh=None)
    nets = _torch_nets(config)
    opt = _torch_sgd(config, nets)
    augment = _torch_augment(config, size)
    render = _library_views(config, size) if views == "library" else None
    when = set(eval_epochs(config))

    def knn():
        return knn_accuracy(_torch_features(nets, bank.images, config, size), bank.labels,
                            _torch_features(nets, eval_split.images, config, size),
                            eval_split.labels, k=config.eval.knn_k,
                            temperature=config.eval.knn_temperature,
                            num_classes=bank.num_classes)

    result = {"loss": [], "knn": {"0": knn()} if 0 in when else {}, "seconds": []}
    losses, t0 = [], time.perf_counter()
    for step, batch in loader:
        if render is not None:
            pair = torch.from_numpy(np.asarray(render(step, batch))).permute(0, 1, 4, 2, 3)
            pair = list(pair.contiguous())
        else:
            x = torch.from_numpy(np.asarray(batch)).permute(0, 3, 1, 2)
            if views == "torchvision-float":
                x = x.float() / 255
            pair = [torch.stack([augment(im) for im in x]) for _ in range(2)]
        losses.append(_torch_step(config, nets, opt, pair, plan.lr(step), plan.momentum(step)))
        if (step + 1) % plan.steps_per_epoch == 0:
            epoch = (step + 1) // plan.steps_per_epoch
            result["seconds"].append(time.perf_counter() - t0)
            result["loss"] += _binned(losses, plan.steps_per_epoch)
            print(f"epoch {epoch}: loss {np.mean(losses):.4f}, "
                  f"{result['seconds'][-1]:.0f} s", flush=True)
            if epoch in when:
                result["knn"][str(epoch)] = knn()
                print(f"epoch {epoch}: kNN top-1 {100 * result['knn'][str(epoch)]:.2f}%",
                      flush=True)
            losses, t0 = [], time.perf_counter()
    return result


def _torch_into_flax(nets):
    """The PyTorch peer's weights in the library's network: torchvision's backbone through
    models.convert, each head's Linear and BatchNorm1d layers in order (heads.MLP's names)."""
    import torch

    from effssl_jax.models import convert
    variables = convert.from_torchvision(nets["backbone"].state_dict())
    params, stats = {"backbone": variables["params"]}, {"backbone": variables["batch_stats"]}
    for head in ("projector", "predictor"):
        if head not in nets:
            continue
        dense = [m for m in nets[head] if isinstance(m, torch.nn.Linear)]
        norms = [m for m in nets[head] if isinstance(m, torch.nn.BatchNorm1d)]
        params[head] = {f"Dense_{i}": {"Dense_0": {
            "kernel": m.weight.detach().numpy().T,
            **({"bias": m.bias.detach().numpy()} if m.bias is not None else {})}}
            for i, m in enumerate(dense)}
        for i, m in enumerate(norms):
            if m.affine:
                params[head][f"BatchNorm_{i}"] = {"scale": m.weight.detach().numpy(),
                                                  "bias": m.bias.detach().numpy()}
            stats.setdefault(head, {})[f"BatchNorm_{i}"] = {
                "mean": m.running_mean.numpy(), "var": m.running_var.numpy()}
    return {"params": params, "batch_stats": stats}


# ----------------------------------------------------------------------------------------------
# Where a gap starts: the first step on the same views.
# ----------------------------------------------------------------------------------------------

def first_step(method: str, seeds=(0, 1, 2)) -> str:
    """The loss and gradient norm of the first step on one batch's two views (the library's
    augmentations, shared by both sides), from each side's own initialisation (three seeds) and
    from the same weights (torchvision's initialisation copied into the library's network)."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from effssl_jax import augment, experiment
    from effssl_jax.data import pipeline
    config = recipe(method, 0, 1)
    size = config.progressive.r_max
    images = pipeline.load_split(config, "train", size, limit=config.batch_size).images
    net_method = experiment.build_method(config, jnp.float32, 1, 1)
    views = augment.render_views(jax.random.key(0), jnp.asarray(images), 5.0, size,
                                 net_method.view_configs, 2, jnp.float32)

    def loss(params, batch_stats):
        outs = [net_method.net.apply({"params": params, "batch_stats": batch_stats}, v,
                                     train=True, mutable=["batch_stats"])[0] for v in views]
        return net_method.pair_loss(*outs, None, None, {}, 0).mean()
    loss_and_grad = jax.jit(jax.value_and_grad(loss))
    init = jax.jit(lambda key: net_method.net.init(key, views[0], train=False))

    def jax_loss_grad(variables):
        value, grads = loss_and_grad(variables["params"], variables["batch_stats"])
        return float(value), float(optax.tree.norm(grads))

    def torch_loss_grad(nets):
        x = torch.from_numpy(np.asarray(views)).permute(0, 1, 4, 2, 3)
        loss = _torch_forward_loss(config, nets, x)
        nets.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in nets.parameters() if p.grad is not None))
        return float(loss), float(norm)

    lines = [f"first step of {method}, batch {config.batch_size}, {size} px: loss, gradient norm",
             "| initialisation | seed | loss | gradient norm |", "|---|---|---|---|"]
    for seed in seeds:
        variables = init(jax.random.key(seed))
        lines.append("| library's own | %d | %.4f | %.3f |" % (seed, *jax_loss_grad(variables)))
    for seed in seeds:
        torch.manual_seed(seed)
        nets = _torch_nets(config)
        row = "| torchvision's | %d | %.4f | %.3f |" % (seed, *torch_loss_grad(nets))
        lines.append(row)
        lines.append("| torchvision's, in the library's network | %d | %.4f | %.3f |"
                     % (seed, *jax_loss_grad(_torch_into_flax(nets))))
    return "\n".join(lines)


def same_weights_steps(method: str, steps: int = 5, seed: int = 0, float64: bool = False) -> str:
    """Whether the gap builds up in the update: `steps` steps of the library's own train step
    (step.py: its optimizer, weight decay, BN updates) and of the PyTorch peer, from the same
    weights (torchvision's initialisation) on the same views (the ones the library's step
    renders, given to PyTorch too), at the recipe's lr and momentum per step; one batch of
    images, new views every step. Prints both losses and the relative difference of the weights
    after each step. With float64 both sides compute in 64 bits, so float32 rounding, which
    training amplifies, no longer hides a difference in the computation."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from effssl_jax import augment, experiment
    from effssl_jax.data import pipeline
    from effssl_jax.step import data_mesh
    config = recipe(method, seed, 1)
    if float64:
        config.dtype = "float64"
        experiment.enable_dtype("float64")
        torch.set_default_dtype(torch.float64)
    dtype = experiment.compute_dtype(config.dtype)
    size = config.progressive.r_max
    images = jnp.asarray(pipeline.load_split(config, "train", size,
                                             limit=config.batch_size).images)
    exp = experiment.build(config, 9469, data_mesh(jax.devices()[:1]), dtype)
    torch.manual_seed(seed)
    nets = _torch_nets(config)
    opt = _torch_sgd(config, nets)
    flax_weights = lambda: jax.tree.map(lambda x: jnp.asarray(x, dtype), _torch_into_flax(nets))
    variables = flax_weights()
    state = exp.init(jax.random.key(seed))
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=exp.tx.init(variables["params"]))
    step = jax.jit(exp.step_fn(exp.spec(size, images.shape[1])))
    render = jax.jit(lambda rng: augment.render_views(rng, images, 5.0, size,
                                                      exp.method.view_configs, 2, dtype))
    lines = [f"{method}: {steps} steps from the same weights on the same views (batch "
             f"{config.batch_size}, {size} px, seed {seed}, {jnp.dtype(dtype).name})",
             "| step | loss, library | loss, PyTorch | weights: |library - PyTorch| / |PyTorch| |",
             "|---|---|---|---|"]
    for t in range(steps):
        views = np.asarray(render(jax.random.fold_in(state.rng, state.step)))
        state, metrics = step(state, images, jnp.asarray(5.0, dtype))
        x = torch.from_numpy(views).permute(0, 1, 4, 2, 3).contiguous()
        theirs = _torch_step(config, nets, opt, list(x), exp.plan.lr(t), exp.plan.momentum(t))
        peer = flax_weights()["params"]
        diff = optax.tree.norm(jax.tree.map(jnp.subtract, state.params, peer))
        lines.append(f"| {t + 1} | {float(metrics['loss']):.6g} | {theirs:.6g} | "
                     f"{float(diff / optax.tree.norm(peer)):.1e} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Whether the two sides' views are alike: statistics of both augmentations on the same images.
# ----------------------------------------------------------------------------------------------

def view_statistics(images: np.ndarray) -> dict:
    """Per-image statistics of float views [V, B, H, W, 3] in [0, 1] of the same B images:
    brightness (mean), contrast (std of the luma), saturation (mean of max - min over channels),
    the share of grey images, and how far the V views of an image are apart (mean |a - b| of the
    views' mean colours, and of their luma histograms in 16 bins)."""
    v = images.astype(np.float64)
    luma = v @ np.array([0.2989, 0.587, 0.114])
    sat = v.max(-1) - v.min(-1)
    colour = v.mean((2, 3))                                      # [V, B, 3]
    hist = np.stack([[np.histogram(im, 16, (0, 1))[0] / im.size for im in view] for view in luma])
    per_image = {"brightness": v.mean((2, 3, 4)), "contrast": luma.std((2, 3)),
                 "saturation": sat.mean((2, 3)), "grey": (sat.max((2, 3)) < 1e-6) * 1.0}
    out = {k: (float(x.mean()), float(x.std() / np.sqrt(x.size))) for k, x in per_image.items()}
    for name, x in (("colour gap", np.abs(colour[0] - colour[1]).sum(-1)),
                    ("histogram gap", np.abs(hist[0] - hist[1]).sum(-1))):
        out[name] = (float(x.mean()), float(x.std() / np.sqrt(x.size)))
    return out


def augment_statistics(method: str, count: int = 1024) -> str:
    """view_statistics of the library's views and of the PyTorch peer's (torchvision v2 on the
    same uint8 host images), mean ± standard error over `count` images."""
    import jax
    import jax.numpy as jnp
    import torch

    from effssl_jax import augment, experiment
    from effssl_jax.data import pipeline
    config = recipe(method, 0, 1)
    size = config.progressive.r_max
    images = pipeline.load_split(config, "train", size, limit=count).images
    views_config = experiment.build_method(config, jnp.float32, 1, 1).view_configs
    render = jax.jit(lambda key, x: jnp.stack([
        augment.augment_batch(jax.random.fold_in(key, v), x, size, 5.0, views_config[v])
        for v in range(2)]))
    ours = np.concatenate([np.asarray(render(jax.random.key(i), images[i:i + 128]))
                           for i in range(0, count, 128)], axis=1)
    torch.manual_seed(0)
    tv = _torch_augment(config, size).transforms[:-1]  # without Normalize
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    theirs = np.stack([np.stack([torchvision_compose(tv)(im).permute(1, 2, 0).numpy()
                                 for im in x]) for _ in range(2)])
    a, b = view_statistics(ours), view_statistics(theirs)
    lines = [f"{method} views, {count} Imagenette train images at {size} px: mean ± s.e.",
             "| statistic | library | torchvision v2 |", "|---|---|---|"]
    lines += [f"| {k} | {a[k][0]:.4f} ± {a[k][1]:.4f} | {b[k][0]:.4f} ± {b[k][1]:.4f} |"
              for k in a]
    return "\n".join(lines)


def torchvision_compose(transforms):
    from torchvision.transforms import v2
    return v2.Compose(transforms)


# ----------------------------------------------------------------------------------------------
# The table.
# ----------------------------------------------------------------------------------------------

def _mean_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.ptp(values) / 2:.2g}"


def _side(run: dict) -> str:
    views = run.get("views", "torchvision")
    return run["framework"] + ("" if views == "torchvision" else f" ({views} views)")


def table(out: str) -> str:
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        runs.setdefault(r["method"], {}).setdefault(_side(r), []).append(r)
    lines = []
    for method in sorted(runs):
        names = sorted(runs[method], key=lambda n: (n != "jax", n))  # jax, torch, torch (...)
        sides = [runs[method][n] for n in names]
        points = max(len(r["loss"]) for rs in sides for r in rs)
        columns = [f"{what}, {n}" for what in ("loss", "kNN top-1 %", "train s/epoch")
                   for n in names]
        lines += [f"## {method}", "",
                  "seeds: " + ", ".join(f"{n} {sorted(r['seed'] for r in rs)}"
                                        for n, rs in zip(names, sides))
                  + "; mean ± half the range over seeds", "",
                  "| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for i in range(points + 1):
            epoch = i / POINTS
            whole = epoch == int(epoch)

            def loss(rs):
                return _mean_spread([r["loss"][i - 1] for r in rs if 0 < i <= len(r["loss"])])

            def knn(rs):
                return _mean_spread([100 * r["knn"][str(int(epoch))] for r in rs
                                     if whole and str(int(epoch)) in r["knn"]])

            def seconds(rs):
                return _mean_spread([r["seconds"][int(epoch) - 1] for r in rs
                                     if whole and 0 < epoch <= len(r["seconds"])])
            cells = [f(rs) for f in (loss, knn, seconds) for rs in sides]
            lines.append(f"| {epoch:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=("simclr", "simsiam"))
    p.add_argument("--framework", choices=("jax", "torch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--views", choices=("torchvision", "torchvision-float", "library"),
                   default="torchvision", help="the PyTorch side's augmentations (library: the "
                   "library's own views; torchvision-float: v2 on float images)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch's threads")
    p.add_argument("--out", default=OUT)
    p.add_argument("--table", action="store_true", help="print the table of the runs in --out")
    p.add_argument("--same-weights-steps", type=int, metavar="N",
                   help="print N steps of both sides from the same weights on the same views")
    p.add_argument("--float64", action="store_true", help="--same-weights-steps in 64 bits")
    p.add_argument("--augment-stats", action="store_true",
                   help="print statistics of --method's views made by both sides' augmentations")
    p.add_argument("--first-step", action="store_true",
                   help="print --method's first-step loss and gradient norm on both sides")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    if args.same_weights_steps:
        print(same_weights_steps(args.method or "simsiam", args.same_weights_steps, args.seed,
                                 args.float64))
        return
    if args.augment_stats:
        print(augment_statistics(args.method or "simsiam"))
        return
    if args.first_step:
        print(first_step(args.method or "simclr"))
        return
    if not (args.method and args.framework):
        p.error("--method and --framework (or --table)")
    config = recipe(args.method, args.seed, args.epochs)
    name = f"{args.method}_{args.framework}_s{args.seed}"
    if args.views != "torchvision":
        if args.framework != "torch":
            p.error("--views is for --framework torch")
        name = f"{args.method}_torch-{args.views}_s{args.seed}"
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.framework == "jax":
        result = run_jax(config, os.path.join(args.out, name))
    else:
        result = run_torch(config, args.threads, args.views)
    result.update(method=args.method, framework=args.framework, views=args.views, seed=args.seed,
                  epochs=args.epochs, wall_s=round(time.perf_counter() - t0, 1),
                  batch_size=config.batch_size, lr=config.optim.lr, resolution=64)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("loss", "knn", "seconds")}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
