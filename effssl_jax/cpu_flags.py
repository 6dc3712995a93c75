"""XLA:CPU flags that make the training step faster, set by the entry points before JAX starts.

`set_default_xla_flags()` adds `DEFAULT` to `XLA_FLAGS` unless the user has set `XLA_FLAGS`
themselves (then nothing is changed). The flags are `xla_cpu_*` ones: they change only how the
CPU backend compiles, so setting them on a GPU/TPU host is harmless.

`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: the convolutions that stay on
XLA (3x3 stride 1 on maps of 4x4 and more, and the stem; see `models/cpu_conv.py`) run on Eigen
instead of YNNPACK, which is faster for ResNet shapes (docs/performance.md, benchmarks/conv_cpu.py).
Experimental in XLA: an unknown flag makes XLA abort at start-up, so only jaxlib versions it was
measured on get it.
"""
from __future__ import annotations

import os

DEFAULT = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
MEASURED_JAXLIB = ("0.10.",)


def default_flags() -> str:
    try:
        from importlib.metadata import version
        jaxlib = version("jaxlib")
    except Exception:  # noqa: BLE001 - no metadata: don't guess
        return ""
    return DEFAULT if jaxlib.startswith(MEASURED_JAXLIB) else ""


def set_default_xla_flags() -> str:
    """Sets XLA_FLAGS to `default_flags()` unless XLA_FLAGS is already set; returns XLA_FLAGS.
    Must run before JAX creates its first backend."""
    if "XLA_FLAGS" not in os.environ:
        flags = default_flags()
        if flags:
            os.environ["XLA_FLAGS"] = flags
    return os.environ.get("XLA_FLAGS", "")
