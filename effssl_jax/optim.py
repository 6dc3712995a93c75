"""SGD with momentum whose learning rate *and* momentum follow schedules (F1-CLR)."""
from __future__ import annotations

import flax.traverse_util
import jax
import optax


def decay_mask(params, decay_bn_and_bias: bool):
    """True for the leaves that get weight decay: conv/dense kernels, and BN scales and biases
    only when asked (SimSiam's reference code decays everything; most others do not)."""
    if decay_bn_and_bias:
        return jax.tree.map(lambda _: True, params)
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


def _sgd(learning_rate, momentum, weight_decay, mask, clip_grad_norm):
    # PyTorch's SGD: buf = momentum * buf + (g + wd * p); p -= lr * buf.
    clip = [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm > 0 else []
    return optax.chain(
        *clip,
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.trace(decay=momentum, nesterov=False),
        optax.scale_by_learning_rate(learning_rate),
    )


def sgd(lr_schedule, momentum_schedule, weight_decay: float, decay_bn_and_bias: bool,
        clip_grad_norm: float = 0.0):
    """Both schedules are injected hyper-parameters, so `opt_state.hyperparams` holds the
    learning rate and momentum of the last update (logged every step). clip_grad_norm > 0 clips
    the raw gradient's global norm first (torch.nn.utils.clip_grad_norm_)."""
    mask = lambda params: decay_mask(params, decay_bn_and_bias)
    return optax.inject_hyperparams(_sgd, static_args=("mask", "clip_grad_norm"))(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay,
        mask=mask, clip_grad_norm=clip_grad_norm)


def from_config(optim_config, lr_schedule, momentum_schedule):
    """sgd() with weight decay, its mask and gradient clipping from config.optim."""
    return sgd(lr_schedule, momentum_schedule, optim_config.weight_decay,
               optim_config.decay_bn_and_bias, optim_config.clip_grad_norm)
