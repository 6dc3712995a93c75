"""Tests run with 8 simulated CPU devices, so data-parallel code is exercised as on a TPU host.
Single-device tests build their mesh from jax.devices()[:1].

The suite is dominated by XLA compiling tiny networks: tests compile without LLVM optimisation and
with XLA:CPU's older loop emitters instead of its fusion emitters (`COMPILE_FAST`, also passed to
the launch.py subprocesses; together they halve the compile time of a tiny train step), which
changes neither the programs nor their float semantics. The tiny configs use ResNet-10 (one block
a stage: half ResNet-18's program) and XLA's convolution (`model.conv_impl=xla`), which compiles
faster than the im2col path that `auto` picks on CPU; test_resnet.py checks that the two agree.
XLA's persistent cache is one folder for the whole session (`persistent_compilation_cache`), so a
program compiled again by a later test, in either worker or in a launch.py subprocess, is
loaded.

Tests make their own data: `image_folder` writes a labelled folder of generated JPEGs
(tests/images.py), so no test reads a downloaded data set or skips for want of one."""
import os
import shutil

import pytest

COMPILE_FAST = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {COMPILE_FAST}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session", autouse=True)
def persistent_compilation_cache(tmp_path_factory, worker_id):
    """One XLA cache for the whole session: both xdist workers and every launch.py subprocess
    (which inherit JAX_COMPILATION_CACHE_DIR), so a program is compiled once per suite run."""
    from effssl_jax import compile as compile_lib
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if worker_id != "master" else root  # xdist: pytest-N/popen-gwK
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(shared / ".jax_cache")
    compile_lib.enable_persistent_cache(str(root / "run"))


def made_once(tmp_path_factory, worker_id: str, name: str, make):
    """The folder `name`, filled by make(folder) once for the whole test session: the first xdist
    worker to ask makes it under a file lock and the other waits and reuses it, so an expensive
    fixture (a finished tiny run) is not made once per worker."""
    import filelock
    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root
    folder = root / name
    with filelock.FileLock(str(folder) + ".lock"):
        if not (folder / ".made").exists():
            folder.mkdir(exist_ok=True)
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, worker_id):
    """image_folder(per_class=4, classes=2, splits=("train", "val"), seed=0, to=None): the folder
    `root/<split>/<class>/*.JPEG` of tests/images.py's write_image_folder (generated JPEGs of
    several sizes, greyscale and CMYK among them), made once for the session and shared by the
    xdist workers. Returns it, to be read only; with `to`, a copy at `to` that the test may
    change."""
    import images

    def make(per_class=4, classes=2, splits=images.SPLITS, seed=0, to=None):
        names = classes if isinstance(classes, int) else "-".join(classes)
        name = f"images-{per_class}-{names}-{'-'.join(splits)}-{seed}"
        folder = made_once(tmp_path_factory, worker_id, name, lambda root:
                           images.write_image_folder(root, per_class, classes, splits, seed))
        if to is None:
            return folder
        shutil.copytree(folder, to, ignore=shutil.ignore_patterns(".made"))
        return to
    return make


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, worker_id):
    """A tiny SimSiam baseline and F1-CLR run (tests/runs.py), made once for all workers
    (read-only)."""
    from runs import tiny_run

    def make(root):
        tiny_run(root / "baseline", "simsiam_baseline", epochs=2)
        tiny_run(root / "f1clr", "simsiam_f1clr", epochs=2)
    root = made_once(tmp_path_factory, worker_id, "report_runs", make)
    return str(root / "baseline"), str(root / "f1clr")


def load_benchmark(name: str):
    """The module benchmarks/<name>.py, imported from its file (benchmarks/ is not a package)."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "benchmarks",
                                                                     f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """A GCS emulator on localhost for the session (tests/gcs_emulator.py): its settings are put in
    os.environ, so this process and every launch.py it starts use it; stopped at the end."""
    from gcs_emulator import Emulator
    emulator = Emulator(str(tmp_path_factory.getbasetemp() / "gcs_emulator.log"))
    saved = {key: os.environ.get(key) for key in emulator.env}
    os.environ.update(emulator.env)
    yield emulator
    emulator.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
