from effssl_jax.evaluate.offline import console_main

console_main()
