#!/usr/bin/env bash
# The accelerator checks of one lent GPU, in one call of at most BUDGET seconds (default 540): every
# step under its own `timeout`, cut to what is left of the budget, and skipped with a line once it is
# spent; everything is teed into $OUT/device_check.log (OUT defaults to ./device_check_out).
#
#   bash benchmarks/device_wheels.sh                  # once, here: .whl/, what the GPU image lacks
#   device run, carry .whl:  bash benchmarks/device_check.sh             # both stages
#                            STAGES=lightly bash benchmarks/device_check.sh   # a second call
#   TINY=1 bash benchmarks/device_check.sh            # the same steps, tiny, on a CPU (9 min here)
#
# 1. The ResNet-50 bf16 SimSiam step at every bucket 96..224 px (benchmarks/accelerator_step.py):
#    a. XLA's GPU autotuning at one bucket: the default level and level 0, compile s and ms/step;
#    b. every bucket cold (an empty persistent cache), at autotuning level AUTOTUNE (default 0,
#       since a bucket's first compile took 61-96 s at XLA's default level on an H200);
#    c. every bucket again in a new process: each compile from the persistent cache;
#    d. the PyTorch peer (torchvision ResNet-50, channels_last, bf16 autocast, torch.compile).
# 2. The paper's regime at small cost, in lightly's Imagenette setting (configs/lightly_imagenette.py:
#    SimCLR, ResNet-18, 128 px, batch 256, device-resident data): cosine for EPOCHS epochs against
#    F1-CLR + SP + HA for 0.6 x EPOCHS, then `report` (kNN, PFLOPs in both conventions, time).
#    It is the Hard Augment case: 6 views scored at the default side (48 px in every bucket,
#    hard_augment.selection_side), the rule results/ha_selection_* and the CPU's Table 9 at 16 px
#    (results/imagenette_table9/) support.
#    lightly's 200 epochs do not fit one call: EPOCHS (default 10) sets the budget. Needs Imagenette
#    at DATA (default ../shared/data/imagenette2-160, which does not travel to the device: 152 MB
#    against the 64 MiB limit); skipped with a line when it is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ] && ! $PY -c "import ml_collections, dm_pix, grain" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
STAGES=${STAGES:-step lightly} BUDGET=${BUDGET:-540} AUTOTUNE=${AUTOTUNE:-0}
if [ "${TINY:-0}" = 1 ]; then
  STEP_ARGS=(--arch resnet18 --batch 8 --resolutions 32,64 --steps 2)
  PROBE_RES=64 TORCH_ARGS=(--no-torch-compile) EPOCHS=${EPOCHS:-2}
  RUN_ARGS=(--config.dataset=synthetic --config.synthetic_train_size=256
            --config.synthetic_test_size=64 --config.batch_size=32 --config.model.width=8
            --config.model.cifar_stem=True --config.progressive.r_max=32
            --config.progressive.r_min=16 --config.progressive.bucket_step=16
            --config.hard_augment.r_sel=16 --config.eval.knn_k=20 --config.progress_bar=False)
else
  STEP_ARGS=() PROBE_RES=224 TORCH_ARGS=() EPOCHS=${EPOCHS:-10} RUN_ARGS=()
fi
DATA=${DATA:-../shared/data/imagenette2-160}
WORK=$(mktemp -d)
step() {  # step NAME SECONDS COMMAND...: COMMAND under `timeout` (at most what the budget has left)
  local name=$1 limit=$2 left=$((BUDGET - SECONDS)); shift 2
  if [ $left -lt 20 ]; then echo "== $name: skipped, the ${BUDGET}s budget is spent"; return; fi
  [ $limit -gt $left ] && limit=$left
  echo "== $name (at most ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$WORK/$name.txt"
  echo "== $name: rc ${PIPESTATUS[0]} after $((SECONDS - t0))s"
}
BENCH=($PY benchmarks/accelerator_step.py "${STEP_ARGS[@]}")

echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) CPUs; STAGES='$STAGES' TINY=${TINY:-0}"
step environment 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv 2>/dev/null; $PY -c 'import jax, torch; print(jax.__version__, jax.devices(), \
  torch.__version__)'"
if [[ " $STAGES " == *" step "* ]]; then
  step autotune_default 150 env JAX_COMPILATION_CACHE_DIR="$WORK/a" "${BENCH[@]}" --resolutions $PROBE_RES
  step autotune_0 90 env JAX_COMPILATION_CACHE_DIR="$WORK/b" \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" "${BENCH[@]}" --resolutions $PROBE_RES
  for pass in cold warm; do  # the second pass reads the first one's persistent cache
    step "jax_$pass" 240 env JAX_COMPILATION_CACHE_DIR="$WORK/c" \
      XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=$AUTOTUNE" "${BENCH[@]}"
  done
  step torch 180 "${BENCH[@]}" --framework torch "${TORCH_ARGS[@]}" --flops-from "$WORK/jax_cold.txt"
fi
if [[ " $STAGES " == *" lightly "* ]]; then
  if [ "${TINY:-0}" = 1 ] || [ -d "$DATA/train" ]; then
    for row in cosine efficient; do
      step "lightly_$row" 300 $PY launch.py --config "configs/lightly_imagenette.py:$row,$EPOCHS" \
        --workdir "$WORK/runs/$row" --config.data_dir="$DATA" "${RUN_ARGS[@]}"
      cp "$WORK/runs/$row/summary.json" "$OUT/summary_$row.json" 2>/dev/null
    done
    step report 60 $PY -m effssl_jax.report "$WORK/runs/cosine" "$WORK/runs/efficient" \
      --out "$WORK/report" --baseline "$WORK/runs/cosine"
    cp "$WORK/report/results.md" "$WORK/report/knn_vs_cost.png" "$OUT/" 2>/dev/null
  else
    echo "== lightly: skipped, no Imagenette at DATA=$DATA (a folder with train/ and val/)"
  fi
fi
echo "== done after ${SECONDS}s, $(date -u +%FT%TZ); the log and results are in $OUT"
