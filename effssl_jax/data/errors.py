"""The data package's error class (defined with the others in effssl_jax/errors.py)."""
from effssl_jax.errors import DataError

__all__ = ["DataError"]
