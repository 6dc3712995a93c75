#!/usr/bin/env bash
# Downloads, into .whl/, the wheels that benchmarks/device_check.sh needs on the lent GPU machine
# beyond what its image holds (JAX, flax, optax, orbax, torch, torchvision, chex, etils, cloudpickle
# and protobuf are there; /work/.library/device/KINDS.md lists the image's packages). That machine
# cannot reach a registry and runs Python 3.12; the wheels travel with the working tree (.whl/ is
# ignored by git, so name it in the call's `carry`).
#
#   bash benchmarks/device_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl ml-collections==1.1.0 dm-pix==0.4.5 grain==0.2.18 array-record==0.8.6 \
  portpicker==1.6.0
ls .whl
