"""Input pipeline vs train step, images/s at each bucket resolution, from one run.

    python benchmarks/input_pipeline.py                                   # imagenette2-160, 96..224
    python benchmarks/input_pipeline.py --resolutions 96,224 --batch 64 --source both
    python benchmarks/input_pipeline.py --data /data/imagenet/train --no-step

Loader: the grain loader of training (`data/grain_loader.py`), one worker pool across all buckets
(the buckets follow each other in one stream, as in a Super Progressive run), decoding the training
split at each bucket's host size (resolution x data.host_margin) with random crops; images/s is
measured at the consumer with nothing else running, after the first batch of each bucket.
Sources: `folder` reads the JPEG files, `packed` an ArrayRecord copy made first by
`python -m effssl_jax.data.prepare` (into a temporary folder), `both` times the two.

Train step: the jitted data-parallel SimSiam step of training (`step.make_step_fn`:
on-device augmentation of two views, per-view BN, backward, SGD) on ResNet-18 (width 64), the same
global batch and host size, compiled once per bucket (compile not timed), median of --steps steps.
A ratio >= 2 means the loader keeps the accelerator fed with room to spare.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                            "shared", "data", "imagenette2-160")


def loader_rates(source, resolutions, batch, batches, threads, margin, processes=0):
    """{resolution: images/s} of one grain loader running through all buckets in turn."""
    from effssl_jax.data import grain_loader
    from effssl_jax.data.order import Sampler
    per = batches + 1  # the first batch of each bucket is not timed
    sizes = tuple((i * per, grain_loader.host_size(r, margin)) for i, r in enumerate(resolutions))
    sampler = Sampler(len(source), batch, seed=0)
    ld = grain_loader.GrainLoader(source, sampler, sizes, per * len(resolutions), threads=threads,
                            processes=processes, prefetch=2 * (threads or os.cpu_count() or 1))
    ld.restore(0)
    stamps = []
    for step, images in ld:
        stamps.append(time.perf_counter())
        assert images.shape == (batch,) + (grain_loader.size_at(sizes, step),) * 2 + (3,)
    ld.close()
    return {r: batch * batches / (stamps[(i + 1) * per - 1] - stamps[i * per])
            for i, r in enumerate(resolutions)}


def step_rates(resolutions, batch, n_steps, margin, width):
    """{resolution: images/s} of the compiled R18 SimSiam train step."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax import config_schema, experiment
    from effssl_jax.data import grain_loader
    from effssl_jax.step import StepSpec

    c = config_schema.default_config()
    c.method, c.batch_size, c.epochs = "simsiam", batch, 1
    c.model.arch, c.model.width = "resnet18", width
    c.progressive.r_max = max(resolutions)
    exp = experiment.build(c, batch * 10)
    mesh, state, compiled = exp.mesh, exp.init(jax.random.key(0)), exp.compiled_steps()
    rng = np.random.default_rng(0)
    out, compile_s = {}, {}
    for r in resolutions:
        size = grain_loader.host_size(r, margin)
        spec = StepSpec(r, 2, min(64, r), size, batch)
        t0 = time.perf_counter()
        fn = compiled.get(spec)
        compile_s[r] = time.perf_counter() - t0
        images = jax.device_put(rng.integers(0, 256, (batch, size, size, 3), np.uint8),
                                NamedSharding(mesh, P("data")))
        times = []
        for i in range(n_steps + 1):
            t0 = time.perf_counter()
            state, metrics = fn(state, images, np.float32(5.0))
            jax.block_until_ready(metrics)
            if i:  # the first call after compiling is not timed
                times.append(time.perf_counter() - t0)
        out[r] = batch / statistics.median(times)
    return out, compile_s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="image folder with train/ (or a class "
                   "folder, or a folder packed by effssl_jax.data.prepare)")
    p.add_argument("--resolutions", default="96,128,160,192,224")
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--batches", type=int, default=20, help="timed loader batches per bucket")
    p.add_argument("--steps", type=int, default=2, help="timed train steps per bucket")
    p.add_argument("--threads", type=int, default=0, help="grain threads (0: min(16, CPUs))")
    p.add_argument("--processes", type=int, default=0, help="grain worker processes")
    p.add_argument("--margin", type=float, default=8 / 7, help="data.host_margin")
    p.add_argument("--width", type=int, default=64, help="ResNet-18 width")
    p.add_argument("--source", choices=("folder", "packed", "both"), default="folder")
    p.add_argument("--no-step", action="store_true", help="time the loader only")
    args = p.parse_args(argv)
    try:
        from effssl_jax import cpu_flags
        cpu_flags.set_default_xla_flags()
    except ImportError:
        pass
    from absl import flags
    flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags
    import jax

    from effssl_jax import config_schema
    from effssl_jax.data import prepare, sources

    resolutions = [int(r) for r in args.resolutions.split(",")]
    c = config_schema.default_config()
    c.dataset = f"folder:{os.path.abspath(args.data)}"
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        kinds = ("folder", "packed") if args.source == "both" else (args.source,)
        for kind in kinds:
            if kind == "packed" and sources.find_prepared(args.data) is None:
                t0 = time.perf_counter()
                prepare.prepare(args.data, tmp, name="bench", progress=False)
                print(f"packed {args.data} in {time.perf_counter() - t0:.1f}s", flush=True)
                c.dataset = f"folder:{tmp}"
            source = sources.open_source(c, "train")
            print(f"{kind}: {len(source)} images ({type(source).__name__}); timing the loader",
                  flush=True)
            rates[kind] = loader_rates(source, resolutions, args.batch, args.batches,
                                       args.threads, args.margin, args.processes)
    step, compile_s = ({}, {}) if args.no_step else step_rates(
        resolutions, args.batch, args.steps, args.margin, args.width)

    from effssl_jax.data import decode, grain_loader
    threads = decode.default_threads(args.threads)
    print(f"\n{jax.devices()[0].platform} x{jax.device_count()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs, grain threads {threads}, processes {args.processes}, "
          f"global batch {args.batch}")
    head = "| bucket px | host px | " + " | ".join(f"loader {k} img/s" for k in rates)
    if step:
        head += " | R18 step img/s | " + " | ".join(f"{k} / step" for k in rates)
    print(head + " |")
    print("|" + "---:|" * (head.count("|")))
    for r in resolutions:
        row = f"| {r} | {grain_loader.host_size(r, args.margin)} | " + " | ".join(
            f"{rates[k][r]:.0f}" for k in rates)
        if step:
            row += f" | {step[r]:.1f} | " + " | ".join(f"{rates[k][r] / step[r]:.1f}x"
                                                       for k in rates)
        print(row + " |")
    if compile_s:
        print("compile s per bucket (not timed): " + ", ".join(
            f"{r}: {s:.0f}" for r, s in compile_s.items()))


if __name__ == "__main__":
    main()
