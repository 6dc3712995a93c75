"""Peak memory of offline evaluation as the dataset grows: evaluation streams its splits.

    python benchmarks/eval_memory.py                    # 25k and 100k generated 32 px images
    python benchmarks/eval_memory.py --sizes 25000,100000 --image-size 32 --knn-check
    python benchmarks/eval_memory.py --sizes '' --knn-check      # the kNN check alone
    python benchmarks/eval_memory.py --decode-whole              # contrast: the split decoded

For each size N it writes a folder dataset of N train (the kNN bank) and 1000 val JPEGs, a
workdir with a randomly initialised ResNet-10 (width 8) checkpoint, and runs
`effssl_jax.evaluate --protocol knn` on it in a fresh process, printing that process's peak RSS.
Streamed, the splits are decoded a chunk at a time, so between two sizes the peak grows by the
extra features (kept on the host, and as the kNN's sharded bank on the device, here the same
memory), not by the extra images, which a whole-split decode would hold.

--knn-check: the chunked, device-sharded kNN equals the in-memory one (all similarities at once
on one device) to 1e-6 on the shared Imagenette (160 px, features of a random ResNet-10 at 32
px), top-1 and class scores.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
IMAGENETTE = os.path.join(ROOT, "..", "shared", "data", "imagenette2-160")


def config(dataset: str, size: int):
    from effssl_jax import config_schema
    c = config_schema.default_config()
    c.dataset, c.method = dataset, "simclr"
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    c.progressive.r_max, c.eval.crop_fraction, c.eval.batch_size = size, 1.0, 512
    c.batch_size, c.epochs, c.progress_bar = 32, 1, False
    return c


def make_folder(root: str, n: int, size: int) -> str:
    from PIL import Image
    rng = np.random.default_rng(n)
    for split, count in (("train", n), ("val", 1000)):
        for c in range(10):
            os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
        for i in range(count):
            image = rng.integers(0, 256, (size + 8, size + 8, 3), np.uint8)
            Image.fromarray(image).save(os.path.join(root, split, f"c{i % 10}", f"{i}.jpg"),
                                        quality=90)
    return root


def make_workdir(workdir: str, c) -> str:
    """A checkpoint of a random init, and config.json: what evaluate reads."""
    import jax

    from effssl_jax import checkpoint, experiment, run_record
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2))
    exp = experiment.build(c, c.batch_size)
    ckpt = checkpoint.Checkpointer(workdir)
    ckpt.save(0, exp.init(jax.random.key(0)), run_record.RunRecord())
    ckpt.wait()
    ckpt.close()
    return workdir


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss, which Linux carries
    across exec from the parent that forked it."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def evaluate_child(workdir: str, decode_whole: bool) -> None:
    from effssl_jax import config_schema
    from effssl_jax.data import pipeline
    from effssl_jax.evaluate import offline
    c = config_schema.from_workdir(workdir)  # contrast: the decoded bank split held meanwhile
    held = pipeline.load_split(c, "bank", c.progressive.r_max) if decode_whole else None
    record = offline.evaluate_workdir(workdir, ("knn",), write=False)
    del held
    peak = _peak_rss()
    print(json.dumps({"peak_rss": peak, "num_train": record["num_train"],
                      "feature_dim": record["feature_dim"],
                      "top1": record["knn"][0]["top1"]}), flush=True)


def knn_check(size: int) -> None:
    import jax

    from effssl_jax import experiment
    from effssl_jax.data import pipeline
    from effssl_jax.evaluate.features import extract_features, make_feature_fn
    from effssl_jax.evaluate.knn import knn_classify, topk_accuracy
    c = config(f"folder:{IMAGENETTE}", size)
    exp = experiment.build(c, c.batch_size)
    state = exp.init(jax.random.key(0))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    fn = make_feature_fn(exp.method.net, exp.mesh, exp.dtype)
    bank, queries = (pipeline.load_split(c, s, pipeline.eval_transform(c, size))
                     for s in ("bank", "eval"))
    bx, qx = (extract_features(fn, variables, d.images, 512, exp.mesh) for d in (bank, queries))
    scores = knn_classify(bx, bank.labels, qx, k=200, temperature=0.1, num_classes=10)
    # In memory: every similarity at once on one device, then the same weighted top-k vote.
    sim = jax.numpy.asarray(qx) @ jax.numpy.asarray(bx).T
    top_sim, top = jax.lax.top_k(sim, 200)
    votes = jax.nn.one_hot(jax.numpy.asarray(bank.labels)[top], 10) * \
        jax.numpy.exp(top_sim / 0.1)[..., None]
    ref = np.asarray(votes.sum(axis=1))
    err = np.abs(scores - ref).max() / np.abs(ref).max()
    a, b = (topk_accuracy(s, queries.labels, ks=(1,))["top1"] for s in (scores, ref))
    print(f"Imagenette {len(bank)} bank / {len(queries)} queries at {size} px: streamed kNN "
          f"top-1 {a:.6f}, in-memory {b:.6f}; max class-score difference {err:.1e} of the "
          f"largest score: {'OK' if err < 1e-6 and a == b else 'DIFFERENT'}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="25000,100000")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--knn-check", action="store_true")
    ap.add_argument("--decode-whole", action="store_true",
                    help="also decode the whole bank split first, as a contrast")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return evaluate_child(args.child, args.decode_whole)
    if args.knn_check:
        knn_check(args.image_size)
    if not args.sizes:
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            data = make_folder(os.path.join(tmp, f"data{n}"), n, args.image_size)
            workdir = make_workdir(os.path.join(tmp, f"run{n}"),
                                   config(f"folder:{data}", args.image_size))
            out = subprocess.run([sys.executable, __file__, "--child", workdir]
                                 + ["--decode-whole"] * args.decode_whole,
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"N={n}: peak RSS {rows[-1]['peak_rss'] / 2**20:.0f} MiB", flush=True)
    (a, b) = rows[0], rows[-1]
    extra = b["num_train"] - a["num_train"]
    features = extra * b["feature_dim"] * 4
    images = extra * args.image_size ** 2 * 3
    growth = b["peak_rss"] - a["peak_rss"]
    print(f"peak RSS grew {growth / 2**20:.0f} MiB for {extra} more images: their features are "
          f"{features / 2**20:.0f} MiB (x2: host and device bank), their decoded images "
          f"{images / 2**20:.0f} MiB; {'streamed' if growth < 2 * features else 'NOT streamed'}")


if __name__ == "__main__":
    main()
