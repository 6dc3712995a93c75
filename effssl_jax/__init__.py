"""effssl-jax: efficient self-supervised pretraining in JAX/Flax."""
