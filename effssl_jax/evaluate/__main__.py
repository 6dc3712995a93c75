from effssl_jax.evaluate.offline import __doc__, console_main  # noqa: F401 (--help prints it)

console_main()
