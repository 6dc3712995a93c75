"""SimSiam's linear-evaluation protocol on the frozen backbone (`SimSiamLinear`: `--protocol
simsiam_linear`): the number the paper's Table 1 reports on ImageNet.

From SimSiam's main_lincls.py and optimizer.py (facebookresearch/simsiam; Chen & He 2021, App. A):
a linear classifier (weights N(0, 0.01), bias 0) on the backbone's pooled features, the backbone
frozen in eval mode (its BN uses the running statistics); LARS (momentum 0.9, trust coefficient
0.001, biases not adapted), batch 4096, lr 0.02 x batch / 256 decayed by a cosine over the epochs,
no weight decay, 90 epochs; training images RandomResizedCrop(224, scale 0.08-1) + horizontal flip
(here from the whole image, kept by the host as training keeps it: data/canvas.py), evaluation
images resized to 256 and centre-cropped to 224 (here: the evaluation transform at
`eval.resolution`, data/folder.py's CenterCrop).
Top-1/top-5 on the eval split. It is not resumable: a killed probe starts again.

Unlike the offline probes (linear.py) it augments every image at every step, so each epoch costs
a backbone forward of the whole bank split: on ImageNet, 90 forwards of 1.28M images. Batches are
decoded on the host by grain (each host its share of every global batch, data/order.py) and
cropped, flipped and normalised on the devices.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import augment, optim, run_log, schedules
from effssl_jax.data import canvas, datasets, decode, folder, pipeline, sources
from effssl_jax.data.order import Sampler
from effssl_jax.evaluate.base import Evaluator, Inputs
from effssl_jax.evaluate.features import make_feature_fn, stream_features
from effssl_jax.evaluate.knn import topk_accuracy

SIMSIAM_LINEAR = dict(batch_size=4096, base_lr=0.02, epochs=90, momentum=0.9, weight_decay=0.0,
                      trust_coefficient=0.001, crop_scale=(0.08, 1.0), init_std=0.01, seed=0)


def _bank_size(config) -> tuple[int, int]:
    """(examples, classes) of the bank split, read from its source, not decoded."""
    classes = datasets.info_for(config.dataset).num_classes
    if config.dataset == "synthetic":  # the bank is the generated train split
        return config.synthetic_train_size, classes
    source = sources.open_source(config, "bank")
    return len(source), max(classes or source.num_classes or 1, 1)


def _labelled_batches(config, size: canvas.HostSize, sampler: Sampler, total_steps: int):
    """(step, this host's whole images (canvas.Images) at `size`, labels [b]) of the bank split;
    labels of undecodable examples are -1 (left out of the loss)."""
    transform = folder.WholeImage(size)
    if config.dataset == "synthetic":
        data = pipeline.load_split(config, "bank", transform)
        for step in range(total_steps):
            idx = sampler.indices(step)
            yield step, data.whole_images()[idx], data.labels[idx]
        return
    import grain
    source = sources.open_source(config, "bank")

    def batch(step):
        pixels, sizes, labels, ok = decode.decode_examples(source, sampler.indices(int(step)),
                                                           transform)
        return int(step), canvas.Images(pixels, sizes), np.where(ok, labels, -1)

    threads = decode.default_threads(config.data.threads)
    yield from grain.MapDataset.range(total_steps).map(batch).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))


def _train_step(net, tx, resolution: int, crop_scale, dtype, mesh):
    """jit(head, opt_state, variables, uint8 images, labels, key) -> (head, opt_state, loss)."""
    def step(head, opt_state, variables, images, labels, key):
        keys = jax.random.split(key, 2 * len(images)).reshape(len(images), 2)

        def view(k, image, size):
            x = augment.random_resized_crop(k[0], image, size, resolution, scale=crop_scale)
            return jnp.where(jax.random.bernoulli(k[1]), x[:, ::-1], x)

        x = augment.normalize(jax.vmap(view)(keys, images.pixels, images.sizes)).astype(dtype)
        features = jax.lax.stop_gradient(
            net.apply(variables, x, method=net.features).astype(jnp.float32))

        def loss_fn(head):
            logits = features @ head["kernel"] + head["bias"]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
            valid = labels >= 0
            return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(valid.sum(), 1)

        loss, grads = jax.value_and_grad(loss_fn)(head)
        updates, opt_state = tx.update(grads, opt_state, head)
        return optax.apply_updates(head, updates), opt_state, loss

    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(step, in_shardings=(replicated, replicated, replicated, batch, batch, None),
                   out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1))


def simsiam_linear(exp, variables, eval_res: int, **options) -> dict:
    """Top-1/top-5 of SimSiam's linear protocol on `variables`' frozen backbone; `options`
    override SIMSIAM_LINEAR (e.g. fewer epochs for a quick look)."""
    o = {**SIMSIAM_LINEAR, **options}
    config, mesh = exp.config, exp.mesh
    num_train, num_classes = _bank_size(config)
    # RandomResizedCrop's default ratios (3/4 to 4/3), as main_lincls.py uses them.
    host_size = canvas.host_size(eval_res, o["crop_scale"][0], 4 / 3, config.data.canvas_aspect,
                                 config.image_size)
    batch_size = max(min(o["batch_size"], num_train) // mesh.size, 1) * mesh.size
    steps_per_epoch = num_train // batch_size
    total = o["epochs"] * steps_per_epoch
    lr = o["base_lr"] * batch_size / 256
    # SimSiam's schedule: a cosine over the epochs, set at the start of each epoch.
    per_epoch = schedules.cosine_schedule(lr, o["epochs"])
    # Weight decay and LARS's trust ratio on the kernel, not the bias (optim.py's mask).
    kernel = functools.partial(optim.decay_mask, decay_bn_and_bias=False)
    tx = optax.lars(lambda step: per_epoch(step // steps_per_epoch),
                    weight_decay=o["weight_decay"], momentum=o["momentum"],
                    trust_coefficient=o["trust_coefficient"], trust_ratio_mask=kernel,
                    weight_decay_mask=kernel)
    net = exp.method.net
    dim = int(jax.eval_shape(
        lambda v: net.apply(v, jnp.zeros((1, eval_res, eval_res, 3), exp.dtype),
                            method=net.features), variables).shape[-1])
    key = jax.random.key(o["seed"])
    head = {"kernel": o["init_std"] * jax.random.normal(key, (dim, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}
    opt_state = tx.init(head)
    step_fn = _train_step(net, tx, eval_res, tuple(o["crop_scale"]), exp.dtype, mesh)
    sampler = Sampler(num_train, batch_size, o["seed"], jax.process_index(), jax.process_count())
    sharding = NamedSharding(mesh, P("data"))
    put = functools.partial(jax.make_array_from_process_local_data, sharding)
    main = jax.process_index() == 0
    t0 = time.perf_counter()
    with run_log.phase(f"SimSiam linear protocol: {o['epochs']} epochs of {steps_per_epoch} "
                       f"steps at batch {batch_size}", main):
        loss = None
        for step, images, labels in _labelled_batches(config, host_size, sampler, total):
            head, opt_state, loss = step_fn(head, opt_state, variables, jax.tree.map(put, images),
                                            put(labels.astype(np.int32)),
                                            jax.random.fold_in(key, step))
            if main and (step + 1) % steps_per_epoch == 0:
                epoch = (step + 1) // steps_per_epoch
                if epoch % 10 == 0 or epoch == o["epochs"]:
                    print(f"  epoch {epoch}: loss {float(loss):.4f}", flush=True)
    fit_s = time.perf_counter() - t0
    fn = make_feature_fn(net, mesh, exp.dtype, normalize=False)
    chunks, num_local, _ = pipeline.stream_split(config, "eval", eval_res, jax.process_index(),
                                                 jax.process_count())
    x, y = stream_features(fn, variables, chunks, num_local, eval_res, config.eval.batch_size,
                           mesh)
    head = jax.device_get(head)
    scores = x @ head["kernel"] + head["bias"]
    return {**topk_accuracy(scores, y), "final_loss": float(loss) if loss is not None else None,
            "protocol": {"source": "SimSiam main_lincls.py (facebookresearch/simsiam)",
                         "optimizer": f"LARS (momentum {o['momentum']:g}, trust coefficient "
                                      f"{o['trust_coefficient']:g}, biases not adapted)",
                         "batch_size": batch_size, "lr": lr, "base_lr": o["base_lr"],
                         "schedule": "cosine over epochs", "epochs": o["epochs"],
                         "weight_decay": o["weight_decay"], "init_std": o["init_std"],
                         "train_augmentation": f"random resized crop {eval_res} px (scale "
                                               f"{o['crop_scale'][0]:g}-{o['crop_scale'][1]:g})"
                                               " + horizontal flip",
                         "steps": total, "fit_s": round(fit_s, 2)}}


class SimSiamLinear(Evaluator):
    """simsiam_linear() of the checkpoint's backbone; `options` are SIMSIAM_LINEAR (e.g. fewer
    epochs or a smaller batch for a quick look)."""
    name = "simsiam_linear"
    options = SIMSIAM_LINEAR
    columns = (("simsiam_linear_top1_%", "SimSiam linear top-1 (%)"),)

    def run(self, inputs: Inputs) -> dict:
        return simsiam_linear(inputs.exp, inputs.variables, inputs.resolution, **self.settings)

    @classmethod
    def describe(cls, result) -> str:
        p = result["protocol"]
        return (f"SimSiam linear protocol ({p['epochs']} epochs, batch {p['batch_size']}): "
                f"top-1 {100 * result['top1']:.2f}%, top-5 {100 * result['top5']:.2f}%")

    @classmethod
    def cells(cls, result, config) -> dict[str, float]:
        return {"simsiam_linear_top1_%": result["top1"]}
