#!/usr/bin/env bash
# ResNet-50 SimSiam train step in bf16 on the accelerators of this host: images/s and model FLOP
# utilisation (MFU) per resolution bucket. Needs `pip install -e '.[gpu]'` (or '.[tpu]').
#
#   bash benchmarks/gpu.sh                       # batch 128 per device, 96..224 px
#   BATCH=256 RESOLUTIONS=224 STEPS=30 bash benchmarks/gpu.sh
#   PEAK_TFLOPS=989 bash benchmarks/gpu.sh       # peak bf16 TFLOP/s per device, if not known below
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh   # another interpreter than python3
#
# The step is the trainer's own (step.make_step_fn: on-device augmentation, two views with
# per-view BN, SimSiam loss, SGD), data-parallel over all local devices, state donated. FLOPs are
# XLA's cost analysis of the step's HLO before backend optimisation (augmentation included, a <1%
# share; the compiled GPU executable's own analysis leaves out cuDNN's convolutions);
# MFU = FLOPs/step x steps/s / (devices x peak dense bf16 FLOP/s).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${BATCH:-128} RESOLUTIONS=${RESOLUTIONS:-96,128,160,192,224} STEPS=${STEPS:-20} \
ARCH=${ARCH:-resnet50} DTYPE=${DTYPE:-bfloat16} PEAK_TFLOPS=${PEAK_TFLOPS:-} ${PYTHON:-python3} - <<'EOF'
import os, sys, time
print(f"python {sys.version.split()[0]}: importing JAX and finding the devices", flush=True)
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from effssl_jax import config_schema, experiment
from effssl_jax.step import StepSpec, data_mesh

# Dense bf16 peak TFLOP/s per device (no sparsity), by substring of device_kind.
PEAKS = {"H200": 989, "H100": 989, "GH200": 989, "A100": 312, "L40S": 362, "L4": 121,
         "A10G": 125, "V100": 125, "TPU v6": 918, "TPU v5p": 459, "TPU v5 lite": 197,
         "TPU v5e": 197, "TPU v4": 275, "TPU v3": 123}
dev = jax.devices()
kind = dev[0].device_kind
peak = float(os.environ["PEAK_TFLOPS"]) if os.environ["PEAK_TFLOPS"] else next(
    (v for k, v in PEAKS.items() if k.lower() in kind.lower()), None)
n_dev = len(dev)
batch = int(os.environ["BATCH"]) * n_dev
resolutions = [int(r) for r in os.environ["RESOLUTIONS"].split(",")]
steps_n = int(os.environ["STEPS"])
c = config_schema.default_config()
c.model.arch, c.batch_size, c.dtype = os.environ["ARCH"], batch, os.environ["DTYPE"]
c.progressive.r_max = host = max(resolutions)
exp = experiment.build(c, 100 * batch, data_mesh(dev))
mesh, dtype, init, steps = exp.mesh, exp.dtype, exp.init, exp.compiled_steps()
images = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, host, host, 3),
                                                          dtype=np.uint8),
                        NamedSharding(mesh, P("data")))
print(f"jax {jax.__version__}, {n_dev} x {kind}, {c.model.arch} SimSiam {jnp.dtype(dtype).name}, "
      f"global batch {batch}, {steps_n} timed steps; peak {peak} TFLOP/s per device", flush=True)
print("| res | compile s | ms/step | images/s | GFLOP/step | TFLOP/s | MFU |\n|---|---|---|---|---|---|---|")
for r in resolutions:
    spec = StepSpec(r, 2, 64, host, batch // jax.process_count())
    t = time.perf_counter()
    step = steps.get(spec)
    compile_s = time.perf_counter() - t
    state = init(jax.random.key(0))
    for _ in range(3):
        state, m = step(state, images, np.float32(5.0))
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps_n):
        state, m = step(state, images, np.float32(5.0))
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / steps_n
    flops = steps.flops[spec]
    tflops = flops / dt / 1e12
    mfu = f"{tflops / (peak * n_dev):.1%}" if peak else "n/a (set PEAK_TFLOPS)"
    print(f"| {r} | {compile_s:.1f} | {dt * 1e3:.1f} | {batch / dt:.0f} | {flops / 1e9:.0f} | "
          f"{tflops:.1f} | {mfu} |", flush=True)
    del state
EOF
