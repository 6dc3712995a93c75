"""SGD with momentum, or AdamW, whose learning rate *and* momentum follow schedules (F1-CLR).

For AdamW the schedule's momentum is beta1, the decay of the first moment: under F1-CLR it is
anti-phased with the learning rate between optim.momentum_high and optim.momentum_low exactly as
SGD's momentum is (fastai's one-cycle policy cycles Adam's beta1 the same way). The weight decay
is constant or a cosine over training (config.optim.weight_decay_end; DINO's ViT recipe).
"""
from __future__ import annotations

import flax.traverse_util
import jax
import optax

from effssl_jax import schedules
from effssl_jax.errors import ConfigError


def decay_mask(params, decay_bn_and_bias: bool):
    """True for the leaves that get weight decay: conv/dense kernels, and BN scales and biases
    only when asked (SimSiam's reference code decays everything; most others do not)."""
    if decay_bn_and_bias:
        return jax.tree.map(lambda _: True, params)
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


def _clip(clip_grad_norm: float) -> list:
    """[clip_by_global_norm] when clip_grad_norm > 0 (torch.nn.utils.clip_grad_norm_), else []."""
    return [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm > 0 else []


def _sgd(learning_rate, momentum, weight_decay, mask, clip_grad_norm):
    # PyTorch's SGD: buf = momentum * buf + (g + wd * p); p -= lr * buf.
    return optax.chain(
        *_clip(clip_grad_norm),
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.trace(decay=momentum, nesterov=False),
        optax.scale_by_learning_rate(learning_rate),
    )


def _adamw(learning_rate, momentum, weight_decay, beta2, mask, clip_grad_norm):
    # torch.optim.AdamW: p *= 1 - lr * wd (decoupled, masked); m = b1 m + (1 - b1) g;
    # v = b2 v + (1 - b2) g^2; p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), with
    # b1 = this step's momentum in both the moment and its bias correction, as torch does when a
    # param group's betas change between steps.
    return optax.chain(
        *_clip(clip_grad_norm),
        optax.adamw(learning_rate, b1=momentum, b2=beta2, weight_decay=weight_decay, mask=mask),
    )


def sgd(lr_schedule, momentum_schedule, weight_decay, decay_bn_and_bias: bool,
        clip_grad_norm: float = 0.0):
    """The schedules (and weight_decay, a float or a schedule) are injected hyper-parameters, so
    `opt_state.hyperparams` holds the learning rate, momentum and weight decay of the last update
    (logged every step). clip_grad_norm > 0 clips the raw gradient's global norm first
    (torch.nn.utils.clip_grad_norm_)."""
    mask = lambda params: decay_mask(params, decay_bn_and_bias)
    return optax.inject_hyperparams(_sgd, static_args=("mask", "clip_grad_norm"))(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay,
        mask=mask, clip_grad_norm=clip_grad_norm)


def adamw(lr_schedule, momentum_schedule, weight_decay, decay_bn_and_bias: bool,
          beta2: float = 0.999, clip_grad_norm: float = 0.0):
    """AdamW (Loshchilov & Hutter, ICLR 2019) with beta1 = momentum_schedule. Injected as sgd()'s:
    `opt_state.hyperparams` holds learning_rate, momentum (beta1), weight_decay and beta2, so the
    train step logs the same keys for both optimizers. Weight decay uses sgd()'s mask."""
    mask = lambda params: decay_mask(params, decay_bn_and_bias)
    return optax.inject_hyperparams(_adamw, static_args=("mask", "clip_grad_norm"))(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay,
        beta2=beta2, mask=mask, clip_grad_norm=clip_grad_norm)


def weight_decay_from_config(optim_config, total_steps: int):
    """config.optim.weight_decay as a float (weight_decay_end < 0), or the cosine from it to
    weight_decay_end over the run's `total_steps`."""
    start, end = optim_config.weight_decay, optim_config.weight_decay_end
    if end < 0:
        return start
    return schedules.cosine_between_schedule(start, end, total_steps)


def from_config(optim_config, lr_schedule, momentum_schedule, total_steps: int):
    """config.optim.optimizer ('sgd' or 'adamw') with the given learning-rate and momentum
    (beta1) schedules, and weight decay (its schedule over the run's `total_steps`), its mask and
    gradient clipping from config.optim."""
    args = (lr_schedule, momentum_schedule, weight_decay_from_config(optim_config, total_steps),
            optim_config.decay_bn_and_bias)
    if optim_config.optimizer == "sgd":
        return sgd(*args, clip_grad_norm=optim_config.clip_grad_norm)
    if optim_config.optimizer == "adamw":
        return adamw(*args, beta2=optim_config.beta2, clip_grad_norm=optim_config.clip_grad_norm)
    raise ConfigError(f"optim.optimizer={optim_config.optimizer!r} is unknown; valid: sgd, adamw")
