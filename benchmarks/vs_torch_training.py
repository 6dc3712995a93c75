"""The same SSL recipe trained by this library and by PyTorch, each on its own input pipeline.

    python benchmarks/vs_torch_training.py --method simclr --framework jax --seed 0
    python benchmarks/vs_torch_training.py --method simclr --framework torch --seed 0 --workers 8
    ...                                                    (simsiam; seeds 0 and 1)
    python benchmarks/vs_torch_training.py --table > results/vs_torch_training/README.md

Both sides train SimCLR or SimSiam on the same JPEG files (Imagenette: --data, by default
../shared/data/imagenette2-160 beside the repository) at 64 px with one recipe,
`recipe(method, seed, epochs)`, and each reads those files through its own standard pipeline (a
comparison that shares one side's pipeline cannot see a difference of the input pipeline):
- the library runs its own training loop, `train.run(config, workdir)` as launch.py does, and the
  script reads WORKDIR/metrics.jsonl back: its loader keeps whole images in a canvas on the host
  (data.loader=memory: each file decoded once), the device draws the method's views (its own
  recipe, augment.recipe=method: methods/recipes.py), and its kNN monitor evaluates at every
  epoch on its own evaluation crops (folder.CenterCrop). The library's loop rather than a loop in
  this script: what is measured is then what a user runs, and the script has no copy of the
  library's pipeline to keep in step with it;
- PyTorch reads the files through torchvision.datasets.ImageFolder and a DataLoader (shuffled
  by its own generator seeded with the run's seed, drop_last, --workers processes) with the
  method's official transforms as its repository writes them (`simsiam_augmentation`,
  `simclr_augmentation` below, with their sources), two views per image, and evaluates kNN on
  ImageFolder with torchvision's Resize(round(64 / eval.crop_fraction) = 73) + CenterCrop(64).
Common to both: torchvision's ResNet-18 layout (ImageNet stem) with each side's own torchvision
initialisation, the method's heads at the library's widths, its loss, batch norm over each view
separately; SGD with momentum (PyTorch's update rule), weight decay on conv/linear kernels only,
the per-step learning rate of the library's schedule (plan.py); batch 128, drop_last; the kNN
monitor (k 200, T 0.1) after every epoch and at initialisation on the same fixed subsets
(eval.online_subset images, chosen as the library chooses them from the run's seed) of the train
split (bank) and of the val split, computed by the library's knn_accuracy on each side's features.
Known differences of the two recipes, which the comparison includes on purpose: the official
blur's sigma is 0.1-2 pixels of the 64-px view (both SimCLR's and SimSiam's code draw it in
pixels whatever the size), the library's 0.1-2 pixels of a 224-px view, 0.03-0.57 px at 64 px;
SimSiam blurs with PIL's box-approximated Gaussian, the library with a true one; torchvision's
PIL ops round to uint8 after each op, the library's stay in float; SimCLR flips before the
colour ops (the library flips last, which commutes).

Each run writes OUT/METHOD_LABEL_sSEED.json (LABEL: --label, default the framework; OUT:
--out, default runs/vs_torch_training): the mean loss of each epoch, kNN top-1 at
initialisation and after each epoch, train seconds per epoch (steps and loading, without the
kNN). `--table` prints every LABEL of OUT as a column, per epoch, mean ± half the range over
seeds, and each row's seed noise: the largest of its columns' half-ranges. The library
before the whole-image pipeline (bdced92: images decoded once at 64 px) cannot run inside this
script; run this script's library side at that commit under its own label instead:

    git worktree add /tmp/old bdced92 && cp benchmarks/vs_torch_training.py /tmp/old/benchmarks/
    (cd /tmp/old && python benchmarks/vs_torch_training.py --method simsiam --framework jax \\
       --seed 0 --label jax-bdced92 --data /work/shared/data/imagenette2-160 \\
       --out /work/main/runs/vs_torch_training)

That commit has one augmentation for every method, SimSiam's: `recipe` then sets the method's
crop scale, and SimCLR keeps SimSiam's colour jitter 0.4/0.4/0.4/0.1 there; its kNN crops are the
central 56 px of the images decoded at 64 px, resized to 64 (centre_resize at crop_fraction 0.875).

`--max-steps N` stops a run after N steps (the library trains one more, unlogged: its stop hook
runs after a step), for smoke tests; a stopped run has no kNN after its part epoch.

Where a gap comes from: `--first-step` (one step's loss and gradient on the same weights),
`--same-weights-steps N [--float64]` (N of the library's train steps next to PyTorch's from the
same weights on the same views; both compare the library's views on purpose),
`--augment-stats` (statistics of both sides' views of the same files), and `--init-knn SEEDS`
(each side's kNN at initialisation over many seeds, and torchvision's weights in the library's
network: the draw's noise, apart from the networks').
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

IMAGENETTE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "imagenette2-160"))
OUT = os.path.join(ROOT, "runs", "vs_torch_training")
# The method's crop scale, for a library without per-method recipes (before augment.recipe).
CROP_SCALE = {"simclr": (0.08, 1.0), "simsiam": (0.2, 1.0)}


def recipe(method: str, seed: int, epochs: int, data: str = IMAGENETTE, knn_subset: int = 2000,
           batch_size: int = 128):
    """The one config both sides read."""
    from effssl_jax.config_schema import default_config
    c = default_config()
    c.name, c.method, c.seed = f"vs_torch_{method}", method, seed
    c.dataset = f"folder:{data}"
    c.data.loader = "memory"
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet18", 64, False
    c.progressive.r_max = 64
    c.batch_size, c.epochs = batch_size, epochs
    c.optim.schedule, c.optim.weight_decay = "cosine", 5e-4
    c.optim.lr = {"simclr": 0.3, "simsiam": 0.05}[method]
    if "recipe" in c.augment:
        c.augment.recipe = "method"  # each method's own augmentation, as PyTorch's side has it
    else:  # the library before per-method recipes (see the docstring)
        c.augment.crop_scale = CROP_SCALE[method]
    c.simclr.update(proj_hidden=2048, proj_dim=128, temperature=0.2)
    c.simsiam.update(proj_dim=2048, proj_hidden=0, proj_layers=3, pred_hidden=512)
    # kNN at initialisation and after every epoch on fixed subsets of `knn_subset` images of the
    # bank (train) and eval splits, the same images on both sides (seeded by the run's seed),
    # each side cropping them with its own Resize(round(64 / 0.875)) + CenterCrop(64).
    c.eval.update(every_epochs=1, knn_k=200, knn_temperature=0.1, crop_fraction=0.875,
                  at_init=True, online_subset=knn_subset)
    c.log_every_steps, c.checkpoint_every_steps, c.progress_bar = 1, 10_000, False
    c.viewers.tensorboard = False
    return c


def data_root(config) -> str:
    return config.dataset.split(":", 1)[1]


def knn_subset(n: int, limit: int, seed: int) -> np.ndarray | None:
    """The sorted indices of the fixed subset of `limit` of n examples that the library's kNN
    monitor uses (pipeline._subset), None for all of them."""
    if not limit or limit >= n:
        return None
    return np.sort(np.random.default_rng([seed, 2]).choice(n, limit, replace=False))


# ----------------------------------------------------------------------------------------------
# The library's side: launch.py's train.run, read back from metrics.jsonl.
# ----------------------------------------------------------------------------------------------

def run_jax(config, workdir: str, max_steps: int = 0) -> dict:
    from effssl_jax import plan as plan_lib
    from effssl_jax import train
    from effssl_jax.data import pipeline
    stop = (lambda record: record["step"] > max_steps) if max_steps else None
    train.run(config, workdir, stop)
    per_epoch = plan_lib.make_plan(config, pipeline.num_train_examples(config)).steps_per_epoch
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = sorted((r for r in records if "loss" in r), key=lambda r: r["step"])
    epochs = range((len(steps) + per_epoch - 1) // per_epoch)
    in_epoch = lambda e: [r for r in steps if (r["step"] - 1) // per_epoch == e]
    return {"loss": [float(np.mean([r["loss"] for r in in_epoch(e)])) for e in epochs],
            "knn": {str(round(r["step"] / per_epoch)): r["knn_top1"]
                    for r in records if "knn_top1" in r},
            "seconds": [float(sum(config.batch_size / r["images_per_sec"] for r in in_epoch(e)))
                        for e in epochs],
            "steps": len(steps), "steps_per_epoch": per_epoch}


# ----------------------------------------------------------------------------------------------
# The PyTorch side: ImageFolder + DataLoader with the method's official transforms.
# ----------------------------------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class PILGaussianBlur:
    """SimSiam's blur (facebookresearch/simsiam simsiam/loader.py, GaussianBlur, after SimCLR):
    PIL's ImageFilter.GaussianBlur with radius (PIL's sigma) uniform in `sigma`, drawn from
    Python's `random`."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, image):
        from PIL import ImageFilter
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class TwoCropsTransform:
    """Two independent draws of one transform of an image (simsiam/loader.py's
    TwoCropsTransform; SimCLR's two views likewise)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return [self.transform(image), self.transform(image)]


def simsiam_augmentation(size: int):
    """SimSiam's augmentation as facebookresearch/simsiam main_simsiam.py writes it (the
    `augmentation` list, "not strengthened" jitter), at `size` instead of 224."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.2, 1.)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([PILGaussianBlur([.1, 2.])], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def simclr_augmentation(size: int, s: float = 1.0):
    """SimCLR's augmentation in torchvision. Its official code is TensorFlow
    (google-research/simclr data_util.py); the paper (arXiv:2002.05709, Appendix A) writes the
    colour distortion in torchvision, get_color_distortion(s): RandomApply(ColorJitter(0.8 s,
    0.8 s, 0.8 s, 0.2 s), p=0.8) then RandomGrayscale(p=0.2), after a random crop of area
    (0.08, 1) and aspect (3/4, 4/3) resized to the output and a horizontal flip
    (data_util.preprocess_for_train's order), and blurs half of the images with sigma uniform in
    [0.1, 2.0] pixels and "the kernel size set to be 10% of the image height/width"
    (data_util.py: kernel_size = height // 10, of radius kernel_size // 2: 7 taps at 64 px)."""
    from torchvision import transforms
    kernel = 2 * (size // 10 // 2) + 1
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.08, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)],
                               p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([transforms.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


OFFICIAL_AUGMENTATION = {"simclr": simclr_augmentation, "simsiam": simsiam_augmentation}


def eval_transform(size: int, crop_fraction: float):
    """torchvision's evaluation transform: Resize(round(size / crop_fraction)) + CenterCrop."""
    from torchvision import transforms
    return transforms.Compose([
        transforms.Resize(round(size / crop_fraction)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def _workers(workers: int, persistent: bool = False) -> dict:
    """A DataLoader's worker settings: `workers` processes, started by spawn, since JAX's threads
    run in this process once the library's kNN has run and a fork could then deadlock."""
    if not workers:
        return {"num_workers": 0}
    return {"num_workers": workers, "multiprocessing_context": "spawn",
            "persistent_workers": persistent}


def _torch_eval_split(config, split: str, size: int, workers: int):
    """(images [N, 3, size, size], labels [N], number of classes) of the kNN monitor's fixed
    subset of ROOT/split, through ImageFolder and eval_transform; decoded once per run."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets
    data = datasets.ImageFolder(os.path.join(data_root(config), split),
                                eval_transform(size, config.eval.crop_fraction))
    classes = len(data.classes)
    chosen = knn_subset(len(data), config.eval.online_subset, config.seed)
    if chosen is not None:
        data = Subset(data, chosen.tolist())
    xs, ys = zip(*DataLoader(data, batch_size=config.eval.batch_size, **_workers(workers)))
    return torch.cat(xs), torch.cat(ys).numpy(), classes


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
        b, device = out_a["proj"].shape[0], z.device
        logits = z @ z.T / config.simclr.temperature
        logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=device),
                                    float("-inf"))
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(device)
        return F.cross_entropy(logits, target)
    d = lambda p, z: -(F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1).mean()
    return 0.5 * (d(out_a["pred"], out_b["proj"]) + d(out_b["pred"], out_a["proj"]))


def _torch_features(nets, images, batch_size: int) -> np.ndarray:
    """Eval-mode backbone features of normalised images [N, 3, H, W], L2-normalised."""
    import torch
    device = next(nets.parameters()).device
    nets.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            f = nets["backbone"](images[i:i + batch_size].to(device))
            out.append(torch.nn.functional.normalize(f, dim=1).cpu().numpy())
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
    return loss.item()


def run_torch(config, threads: int, workers: int, max_steps: int = 0) -> dict:
    """The PyTorch side's run (on the GPU if there is one): ImageFolder + DataLoader with the
    method's official transforms, kNN at initialisation and after every epoch."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets

    from effssl_jax import plan as plan_lib
    from effssl_jax.evaluate.knn import knn_accuracy

    random.seed(config.seed)  # PILGaussianBlur's draws in this process (workers seed their own)
    torch.manual_seed(config.seed)
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = config.progressive.r_max
    train_set = datasets.ImageFolder(
        os.path.join(data_root(config), "train"),
        TwoCropsTransform(OFFICIAL_AUGMENTATION[config.method](size)))
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                        pin_memory=device.type == "cuda", drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed),
                        **_workers(workers, persistent=True))
    plan = plan_lib.make_plan(config, len(train_set))
    assert len(loader) == plan.steps_per_epoch, (len(loader), plan.steps_per_epoch)
    bank = _torch_eval_split(config, "train", size, workers)
    queries = _torch_eval_split(config, "val", size, workers)
    nets = _torch_nets(config).to(device)
    opt = _torch_sgd(config, nets)

    def knn(epoch: int) -> float:
        top1 = knn_accuracy(_torch_features(nets, bank[0], config.eval.batch_size), bank[1],
                            _torch_features(nets, queries[0], config.eval.batch_size),
                            queries[1], k=config.eval.knn_k,
                            temperature=config.eval.knn_temperature, num_classes=bank[2])
        print(f"epoch {epoch}: kNN top-1 {100 * top1:.2f}%", flush=True)
        return top1

    total = min(plan.total_steps, max_steps or plan.total_steps)
    result = {"loss": [], "knn": {"0": knn(0)} if config.eval.at_init else {}, "seconds": []}
    step = 0
    for epoch in range(1, config.epochs + 1):
        losses, t0 = [], time.perf_counter()
        for (view_a, view_b), _ in loader:
            views = [v.to(device, non_blocking=True) for v in (view_a, view_b)]
            losses.append(_torch_step(config, nets, opt, views, plan.lr(step),
                                      plan.momentum(step)))
            step += 1
            if step == total:
                break
        result["seconds"].append(time.perf_counter() - t0)
        result["loss"].append(float(np.mean(losses)))
        print(f"epoch {epoch}: loss {result['loss'][-1]:.4f} ({len(losses)} steps), "
              f"{result['seconds'][-1]:.0f} s", flush=True)
        if step < epoch * plan.steps_per_epoch:
            break  # stopped by --max-steps: no kNN after a part epoch
        result["knn"][str(epoch)] = knn(epoch)
        if step == total:
            break
    return {**result, "steps": step, "steps_per_epoch": plan.steps_per_epoch}


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
# Where a gap starts: the same weights on the same views (the library's, on purpose).
# ----------------------------------------------------------------------------------------------

def _library_images(config, count: int):
    """A fixed subset of `count` train images (knn_subset's, from config.seed) as the library's
    loader keeps them: whole, in a canvas at its host size (canvas.Images of device arrays)."""
    import jax
    import jax.numpy as jnp

    from effssl_jax import experiment, methods
    from effssl_jax.data import folder, pipeline
    size = experiment.host_size(config, methods.view_configs(config), config.progressive.r_max)
    data = pipeline.load_split(config, "train", folder.WholeImage(size), limit=count)
    return jax.tree.map(jnp.asarray, data.whole_images())


def first_step(method: str, data: str = IMAGENETTE, seeds=(0, 1, 2)) -> str:
    """The loss and gradient norm of the first step on one batch's two views (the library's
    augmentations, shared by both sides), from each side's own initialisation (three seeds) and
    from the same weights (torchvision's initialisation copied into the library's network)."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from effssl_jax import augment, experiment
    config = recipe(method, 0, 1, data)
    size = config.progressive.r_max
    images = _library_images(config, config.batch_size)
    net_method = experiment.build_method(config, jnp.float32, 1, 1)
    views = augment.render_views(jax.random.key(0), images, augment.STANDARD_MAGNITUDE, size,
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
        x = torch.from_numpy(np.array(views)).permute(0, 1, 4, 2, 3)
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


def same_weights_steps(method: str, steps: int = 5, seed: int = 0, float64: bool = False,
                       data: str = IMAGENETTE) -> str:
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
    from effssl_jax.step import data_mesh
    config = recipe(method, seed, 1, data)
    if float64:
        config.dtype = "float64"
        experiment.enable_dtype("float64")
        torch.set_default_dtype(torch.float64)
    dtype = experiment.compute_dtype(config.dtype)
    size = config.progressive.r_max
    images = _library_images(config, config.batch_size)
    exp = experiment.build(config, 9469, data_mesh(jax.devices()[:1]), dtype)
    torch.manual_seed(seed)
    nets = _torch_nets(config)
    opt = _torch_sgd(config, nets)
    flax_weights = lambda: jax.tree.map(lambda x: jnp.asarray(x, dtype), _torch_into_flax(nets))
    variables = flax_weights()
    state = exp.init(jax.random.key(seed))
    state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                          opt_state=exp.tx.init(variables["params"]))
    step = jax.jit(exp.step_fn(exp.spec(size, images.canvas)))
    render = jax.jit(lambda rng: augment.render_views(rng, images, 5.0, size,
                                                      exp.method.view_configs, 2, dtype))
    lines = [f"{method}: {steps} steps from the same weights on the same views (batch "
             f"{config.batch_size}, {size} px, seed {seed}, {jnp.dtype(dtype).name})",
             "| step | loss, library | loss, PyTorch | weights: |library - PyTorch| / |PyTorch| |",
             "|---|---|---|---|"]
    for t in range(steps):
        views = np.array(render(jax.random.fold_in(state.rng, state.step)))
        state, metrics = step(state, images, jnp.asarray(5.0, dtype))
        x = torch.from_numpy(views).permute(0, 1, 4, 2, 3).contiguous()
        theirs = _torch_step(config, nets, opt, list(x), exp.plan.lr(t), exp.plan.momentum(t))
        peer = flax_weights()["params"]
        diff = optax.tree.norm(jax.tree.map(jnp.subtract, state.params, peer))
        lines.append(f"| {t + 1} | {float(metrics['loss']):.6g} | {theirs:.6g} | "
                     f"{float(diff / optax.tree.norm(peer)):.1e} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def init_knn(method: str, seeds, data: str = IMAGENETTE, workers: int = 0) -> str:
    """kNN at initialisation over more seeds than the training runs, each side's initial weights
    on the same evaluation pixels (torchvision's eval_transform, which the library's
    folder.CenterCrop reproduces): torchvision's initialisation in PyTorch; the library's own
    (exp.init(key(seed)), as train.run draws it); and torchvision's weights copied into the
    library's network, which separates a difference of the initial weights from one of the two
    networks' computation. Each seed also draws its own kNN subsets, as the runs do, and the
    first two columns are the runs' own kNN at initialisation where a run of that seed exists."""
    import jax
    import jax.numpy as jnp
    import torch

    from effssl_jax import experiment
    from effssl_jax.evaluate.features import extract_features, make_feature_fn
    from effssl_jax.evaluate.knn import knn_accuracy
    from effssl_jax.step import data_mesh

    mesh = data_mesh(jax.devices()[:1])
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    lines = [f"{method}: kNN top-1 % at initialisation on each seed's subsets",
             "| seed | PyTorch | library | PyTorch's weights in the library's network |",
             "|---|---|---|---|"]
    columns = []
    for seed in seeds:
        config = recipe(method, seed, 1, data)
        size, bs = config.progressive.r_max, config.eval.batch_size
        torch.manual_seed(seed)  # then as run_torch: each split's DataLoader draws a seed first
        bank, queries = (_torch_eval_split(config, s, size, workers) for s in ("train", "val"))
        nets = _torch_nets(config)
        uint8 = [np.rint(255 * (x.permute(0, 2, 3, 1).numpy() * std + mean)).clip(0, 255)
                 .astype(np.uint8) for x in (bank[0], queries[0])]

        def knn(features):
            return 100 * knn_accuracy(features(bank[0], uint8[0]), bank[1],
                                      features(queries[0], uint8[1]), queries[1],
                                      k=config.eval.knn_k, temperature=config.eval.knn_temperature,
                                      num_classes=bank[2])
        exp = experiment.build(config, 9469, mesh)
        state = exp.init(jax.random.key(config.seed))
        fn = make_feature_fn(exp.method.net, mesh, jnp.float32)
        row = [knn(lambda x, _: _torch_features(nets, x, bs)),
               knn(lambda _, u: extract_features(
                   fn, {"params": state.params, "batch_stats": state.batch_stats}, u, bs, mesh)),
               knn(lambda _, u: extract_features(fn, _torch_into_flax(nets), u, bs, mesh))]
        columns.append(row)
        lines.append(f"| {seed} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
        print(lines[-1], flush=True)
    c = np.asarray(columns)
    lines.append("| mean ± std | " + " | ".join(
        f"{m:.2f} ± {s:.2f}" for m, s in zip(c.mean(0), c.std(0, ddof=1))) + " |")
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


def augment_statistics(method: str, count: int = 1024, data: str = IMAGENETTE) -> str:
    """view_statistics of the two sides' views of the same `count` train files: the library's
    (its whole images in a canvas, its on-device views) and PyTorch's (the method's official
    transforms on ImageFolder's PIL images), mean ± standard error."""
    import jax
    import torch
    from torch.utils.data import Subset
    from torchvision import datasets, transforms

    from effssl_jax import augment, methods
    config = recipe(method, 0, 1, data)
    size = config.progressive.r_max
    images = _library_images(config, count)
    render = jax.jit(lambda key, x: jax.numpy.stack([
        augment.augment_batch(jax.random.fold_in(key, v), x, size, augment.STANDARD_MAGNITUDE,
                              methods.view_configs(config)[v]) for v in range(2)]))
    ours = np.concatenate([np.asarray(render(jax.random.key(i), images[i:i + 128]))
                           for i in range(0, count, 128)], axis=1)
    random.seed(0)
    torch.manual_seed(0)
    official = OFFICIAL_AUGMENTATION[method](size).transforms
    assert isinstance(official[-1], transforms.Normalize)
    files = datasets.ImageFolder(os.path.join(data, "train"),
                                 TwoCropsTransform(transforms.Compose(official[:-1])))
    chosen = knn_subset(len(files), count, config.seed)
    files = files if chosen is None else Subset(files, chosen.tolist())
    theirs = np.stack([np.stack([v.permute(1, 2, 0).numpy() for v in files[i][0]])
                       for i in range(len(files))], axis=1)
    a, b = view_statistics(ours), view_statistics(theirs)
    lines = [f"{method} views of {count} train files at {size} px: mean ± s.e.",
             "| statistic | library | PyTorch (official transforms) |", "|---|---|---|"]
    lines += [f"| {k} | {a[k][0]:.4f} ± {a[k][1]:.4f} | {b[k][0]:.4f} ± {b[k][1]:.4f} |"
              for k in a]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The table.
# ----------------------------------------------------------------------------------------------

def _half_range(values) -> float | None:
    return float(np.ptp(values)) / 2 if len(values) > 1 else None


def _cell(values, digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {_half_range(values):.{digits}f}"


def _noise(columns, digits: int) -> str:
    spreads = [h for h in map(_half_range, columns) if h is not None]
    return f"{max(spreads):.{digits}f}" if spreads else "–"


def _runs(out: str) -> dict:
    """{method: {label: [run, ...]}} of the runs in `out` (files of this version of the script:
    those with a label)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            run = json.load(f)
        if "label" in run:
            runs.setdefault(run["method"], {}).setdefault(run["label"], []).append(run)
    return runs


def _order(label: str):
    return (label != "jax", label != "torch", label)


def table(out: str) -> str:
    """Per method and epoch, each label's loss (the epoch's mean) and kNN top-1, mean ± half the
    range over its seeds, and the row's seed noise: the largest half-range of its columns."""
    lines = []
    for method, by_label in sorted(_runs(out).items()):
        labels = sorted(by_label, key=_order)
        sides = [by_label[n] for n in labels]

        def seeds(rs):
            done = [f"s{r['seed']}" + ("" if r["steps"] == r["epochs"] * r["steps_per_epoch"]
                                       else f" ({r['steps']} steps)") for r in rs]
            return ", ".join(sorted(done))
        lines += [f"## {method}", "",
                  "; ".join(f"{n}: {seeds(rs)}" for n, rs in zip(labels, sides)), "",
                  "mean ± half the range over seeds; noise: the largest half-range of the row's "
                  "columns", ""]
        columns = ([f"loss, {n}" for n in labels] + ["loss noise"]
                   + [f"kNN top-1 %, {n}" for n in labels] + ["kNN noise"])
        lines += ["| epoch | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        epochs = max(len(r["loss"]) for rs in sides for r in rs)
        for e in range(epochs + 1):
            loss = [[r["loss"][e - 1] for r in rs if 0 < e <= len(r["loss"])] for rs in sides]
            knn = [[100 * r["knn"][str(e)] for r in rs if str(e) in r["knn"]] for rs in sides]
            cells = ([_cell(v, 4) for v in loss] + [_noise(loss, 4)]
                     + [_cell(v, 2) for v in knn] + [_noise(knn, 2)])
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines += ["", "train seconds per epoch (mean over epochs and seeds): " + ", ".join(
            f"{n} {np.mean([s for r in rs for s in r['seconds']]):.1f}"
            for n, rs in zip(labels, sides)), ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=("simclr", "simsiam"))
    p.add_argument("--framework", choices=("jax", "torch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--label", help="the run's name in its file and in --table (default: "
                   "--framework); e.g. the library at another commit")
    p.add_argument("--data", default=IMAGENETTE, help="the image folder (train/, val/)")
    p.add_argument("--batch-size", type=int, default=128, help="other than 128: smoke tests")
    p.add_argument("--max-steps", type=int, default=0, metavar="N",
                   help="stop after N steps (smoke tests)")
    p.add_argument("--knn-subset", type=int, default=2000, metavar="N",
                   help="images of each kNN split (bank: train, queries: val); 0: all")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch's threads")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="PyTorch's DataLoader processes")
    p.add_argument("--out", default=OUT)
    p.add_argument("--table", action="store_true", help="print the table of the runs in --out")
    p.add_argument("--same-weights-steps", type=int, metavar="N",
                   help="print N steps of both sides from the same weights on the same views")
    p.add_argument("--float64", action="store_true", help="--same-weights-steps in 64 bits")
    p.add_argument("--augment-stats", action="store_true",
                   help="print statistics of --method's views made by both sides' augmentations")
    p.add_argument("--init-knn", metavar="SEEDS",
                   help="print --method's kNN at initialisation on both sides for these seeds")
    p.add_argument("--first-step", action="store_true",
                   help="print --method's first-step loss and gradient norm on both sides")
    args = p.parse_args()
    if args.table:
        print(table(args.out))
        return
    if args.same_weights_steps:
        print(same_weights_steps(args.method or "simsiam", args.same_weights_steps, args.seed,
                                 args.float64, args.data))
        return
    if args.augment_stats:
        print(augment_statistics(args.method or "simsiam", data=args.data))
        return
    if args.init_knn:
        print(init_knn(args.method or "simclr", [int(v) for v in args.init_knn.split(",")],
                       args.data, args.workers))
        return
    if args.first_step:
        print(first_step(args.method or "simclr", args.data))
        return
    if not (args.method and args.framework):
        p.error("--method and --framework (or --table)")
    config = recipe(args.method, args.seed, args.epochs, args.data, args.knn_subset,
                    args.batch_size)
    label = args.label or args.framework
    name = f"{args.method}_{label}_s{args.seed}"
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.framework == "jax":
        result = run_jax(config, os.path.join(args.out, name), args.max_steps)
    else:
        result = run_torch(config, args.threads, args.workers, args.max_steps)
    result.update(method=args.method, framework=args.framework, label=label, seed=args.seed,
                  epochs=args.epochs, wall_s=round(time.perf_counter() - t0, 1),
                  batch_size=config.batch_size, lr=config.optim.lr,
                  resolution=config.progressive.r_max, knn_subset=args.knn_subset)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("loss", "knn", "seconds", "steps")}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
