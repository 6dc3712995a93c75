"""The two-view SimSiam train step on this host's accelerators, per resolution bucket: compile
seconds, ms/step, images/s and model FLOP utilisation, for the library (JAX) or a PyTorch peer.

    python benchmarks/accelerator_step.py                          # JAX, ResNet-50 bf16, 96..224
    python benchmarks/accelerator_step.py --framework torch        # the PyTorch peer
    python benchmarks/accelerator_step.py --batch 256 --resolutions 224 --steps 30
    XLA_FLAGS=--xla_gpu_autotune_level=0 python benchmarks/accelerator_step.py  # autotuning off

jax: the trainer's own step (step.make_step_fn: on-device augmentation, two views with per-view
BN, SimSiam loss, SGD), data-parallel over all local devices, state donated. Compile seconds are
what `CompiledSteps.get` took: a second process with the same JAX_COMPILATION_CACHE_DIR measures
them from XLA's persistent cache. FLOPs are XLA's cost analysis of the HLO before backend
optimisation (`compile.flops_of`).

torch: torchvision's ResNet with the same SimSiam heads and loss (projector 2048 x 3, predictor
512), SGD momentum 0.9 and weight decay 5e-4, channels_last, bf16 autocast and `torch.compile`
(--no-torch-compile: eager), both views in one forward each with train-mode BN per view, on views
already on the device (augmentation not timed). Its MFU uses the JAX step's FLOPs when
--flops-from gives the JAX run's output, else it is left out.

MFU = FLOPs/step x steps/s / (devices x peak dense bf16 FLOP/s); PEAK_TFLOPS overrides the table.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import step_parser  # noqa: E402

# Dense bf16 peak TFLOP/s per device (no sparsity), by substring of the device's name.
PEAKS = {"H200": 989, "H100": 989, "GH200": 989, "A100": 312, "L40S": 362, "L4": 121,
         "A10G": 125, "V100": 125, "TPU v6": 918, "TPU v5p": 459, "TPU v5 lite": 197,
         "TPU v5e": 197, "TPU v4": 275, "TPU v3": 123}


def peak_tflops(kind: str):
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    return next((v for k, v in PEAKS.items() if k.lower() in kind.lower()), None)


def row(r, compile_s, dt, batch, gflops, peak, devices):
    tflops = gflops / 1e3 / dt if gflops else None
    mfu = f"{tflops / (peak * devices):.1%}" if tflops and peak else "n/a"
    return (f"| {r} | {compile_s:.1f} | {dt * 1e3:.1f} | {batch / dt:.0f} | "
            f"{gflops or 0:.0f} | {tflops or 0:.1f} | {mfu} |")


def timed(run, steps: int) -> float:
    """Seconds per call of run(sync_after: bool), after 3 warm-up calls."""
    for _ in range(3):
        run()
    run(True)
    t = time.perf_counter()
    for _ in range(steps - 1):
        run()
    run(True)
    return (time.perf_counter() - t) / steps


def jax_rows(args):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax import config_schema, experiment
    from effssl_jax.compile import enable_persistent_cache
    from effssl_jax.data.canvas import Images
    from effssl_jax.step import StepSpec, data_mesh
    devices = jax.devices()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        enable_persistent_cache(os.environ["JAX_COMPILATION_CACHE_DIR"])
    batch = args.batch * len(devices)
    resolutions = [int(r) for r in args.resolutions.split(",")]
    c = config_schema.default_config()
    c.model.arch, c.batch_size, c.dtype = args.arch, batch, args.dtype
    c.progressive.r_max = host = max(resolutions)
    exp = experiment.build(c, 100 * batch, data_mesh(devices))
    steps = exp.compiled_steps()
    images = jax.device_put(Images.full(np.random.default_rng(0).integers(
        0, 256, (batch, host, host, 3), dtype=np.uint8)), NamedSharding(exp.mesh, P("data")))
    yield (f"jax {jax.__version__}, {len(devices)} x {devices[0].device_kind}, {args.arch} "
           f"SimSiam {args.dtype}, global batch {batch}, XLA_FLAGS="
           f"{os.environ.get('XLA_FLAGS', '')!r}"), devices
    for r in resolutions:
        spec = StepSpec(r, 2, min(64, r), host, batch // jax.process_count())
        t = time.perf_counter()
        step = steps.get(spec)
        compile_s = time.perf_counter() - t
        box = [exp.init(jax.random.key(0)), None]

        def run(sync_after=False):
            box[0], box[1] = step(box[0], images, np.float32(5.0))
            if sync_after:
                jax.block_until_ready(box[1])

        yield r, compile_s, timed(run, args.steps), batch, steps.flops[spec] / 1e9
    steps.close()


def torch_rows(args):
    import torch
    import torchvision
    from torch import nn
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    backbone = getattr(torchvision.models, args.arch)()
    d = backbone.fc.in_features
    backbone.fc = nn.Identity()
    p = 2048
    projector = nn.Sequential(
        nn.Linear(d, p, bias=False), nn.BatchNorm1d(p), nn.ReLU(),
        nn.Linear(p, p, bias=False), nn.BatchNorm1d(p), nn.ReLU(),
        nn.Linear(p, p, bias=False), nn.BatchNorm1d(p, affine=False))
    predictor = nn.Sequential(nn.Linear(p, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
                              nn.Linear(512, p))
    model = nn.ModuleDict(dict(backbone=backbone, projector=projector, predictor=predictor))
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32

    def D(p, z):
        return -nn.functional.cosine_similarity(p, z.detach(), dim=-1).mean()

    def step(v1, v2):
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            z1 = projector(backbone(v1))
            z2 = projector(backbone(v2))
            loss = 0.5 * (D(predictor(z1), z2) + D(predictor(z2), z1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    compiled = torch.compile(step) if args.torch_compile else step
    yield (f"torch {torch.__version__}, 1 x {kind}, {args.arch} SimSiam {args.dtype} autocast, "
           f"channels_last, {'torch.compile' if args.torch_compile else 'eager'}, batch "
           f"{args.batch}"), [None]
    for r in (int(r) for r in args.resolutions.split(",")):
        views = [torch.randn(args.batch, 3, r, r, device=device).contiguous(
            memory_format=torch.channels_last) for _ in range(2)]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        t = time.perf_counter()
        compiled(*views)
        sync()
        compile_s = time.perf_counter() - t  # the first call: compiles (and runs once)

        def run(sync_after=False):
            compiled(*views)
            if sync_after:
                sync()

        yield r, compile_s, timed(run, args.steps), args.batch, None


def main():
    ap = step_parser(__doc__)
    ap.set_defaults(arch="resnet50", batch=128, resolutions="96,128,160,192,224")
    ap.add_argument("--framework", choices=("jax", "torch"), default="jax")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per bucket")
    ap.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    ap.add_argument("--flops-from", help="a JAX run's output: its GFLOP/step give torch's MFU")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}: starting {args.framework}", flush=True)
    flops = {}
    if args.flops_from and os.path.exists(args.flops_from):
        for line in open(args.flops_from):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 7 and cells[0].isdigit():
                flops[int(cells[0])] = float(cells[4])
    rows = (jax_rows if args.framework == "jax" else torch_rows)(args)
    header, devices = next(rows)
    peak = peak_tflops(header)
    print(f"{header}; {args.steps} timed steps; peak {peak} TFLOP/s per device", flush=True)
    print("| res | compile s | ms/step | images/s | GFLOP/step | TFLOP/s | MFU |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    for r, compile_s, dt, batch, gflops in rows:
        print(row(r, compile_s, dt, batch, gflops or flops.get(r), peak, len(devices)),
              flush=True)


if __name__ == "__main__":
    main()
