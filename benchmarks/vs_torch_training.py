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

    from effssl_jax import augment
    v = augment.ViewConfig(crop_scale=tuple(config.augment.crop_scale),
                           blur_prob=config.augment.blur_prob)
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


def run_torch(config, threads: int) -> dict:
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
    decay = [p for p in nets.parameters() if p.ndim > 1]  # conv / linear kernels
    no_decay = [p for p in nets.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": config.optim.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.0,
                          momentum=config.optim.momentum)
    augment = _torch_augment(config, size)
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
        for group in opt.param_groups:
            group["lr"] = float(plan.lr(step))
            group["momentum"] = float(plan.momentum(step))
        x = torch.from_numpy(np.asarray(batch)).permute(0, 3, 1, 2)
        views = [torch.stack([augment(im) for im in x]) for _ in range(2)]
        outs = []
        for v in views:  # batch norm over each view, as the library's step
            feat = nets["backbone"](v)
            out = {"proj": nets["projector"](feat)}
            if "predictor" in nets:
                out["pred"] = nets["predictor"](out["proj"])
            outs.append(out)
        loss = _torch_loss(config, *outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
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
    from effssl_jax.models import convert
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
        outs = []
        for v in x:
            out = {"proj": nets["projector"](nets["backbone"](v))}
            if "predictor" in nets:
                out["pred"] = nets["predictor"](out["proj"])
            outs.append(out)
        loss = _torch_loss(config, *outs)
        nets.zero_grad()
        loss.backward()
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in nets.parameters() if p.grad is not None))
        return float(loss), float(norm)

    def torch_into_flax(nets):
        """The PyTorch peer's weights in the library's network: torchvision's backbone through
        models.convert, each head's Linear and BatchNorm1d layers in order (heads.MLP's names)."""
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
                     % (seed, *jax_loss_grad(torch_into_flax(nets))))
    return "\n".join(lines)


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


def table(out: str) -> str:
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        runs.setdefault((r["method"], r["framework"]), []).append(r)
    lines = []
    for method in sorted({m for m, _ in runs}):
        sides = [runs.get((method, fw), []) for fw in ("jax", "torch")]
        points = max(len(r["loss"]) for r in sides[0] + sides[1])
        lines += [f"## {method}", "",
                  f"seeds: jax {sorted(r['seed'] for r in sides[0])}, torch "
                  f"{sorted(r['seed'] for r in sides[1])}; mean ± half the range over seeds", "",
                  "| epoch | loss, jax | loss, torch | kNN top-1 %, jax | kNN top-1 %, torch "
                  "| train s/epoch, jax | train s/epoch, torch |", "|---|---|---|---|---|---|---|"]
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
            lines.append(f"| {epoch:g} | {loss(sides[0])} | {loss(sides[1])} | {knn(sides[0])} | "
                         f"{knn(sides[1])} | {seconds(sides[0])} | {seconds(sides[1])} |")
        lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=("simclr", "simsiam"))
    p.add_argument("--framework", choices=("jax", "torch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch's threads")
    p.add_argument("--out", default=OUT)
    p.add_argument("--table", action="store_true", help="print the table of the runs in --out")
    p.add_argument("--first-step", action="store_true",
                   help="print --method's first-step loss and gradient norm on both sides")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    if args.first_step:
        print(first_step(args.method or "simclr"))
        return
    if not (args.method and args.framework):
        p.error("--method and --framework (or --table)")
    config = recipe(args.method, args.seed, args.epochs)
    name = f"{args.method}_{args.framework}_s{args.seed}"
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.framework == "jax":
        result = run_jax(config, os.path.join(args.out, name))
    else:
        result = run_torch(config, args.threads)
    result.update(method=args.method, framework=args.framework, seed=args.seed,
                  epochs=args.epochs, wall_s=round(time.perf_counter() - t0, 1),
                  batch_size=config.batch_size, lr=config.optim.lr, resolution=64)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("loss", "knn", "seconds")}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
