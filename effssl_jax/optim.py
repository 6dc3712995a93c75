"""SGD with momentum, or AdamW, whose learning rate *and* momentum follow schedules (F1-CLR).

For AdamW the schedule's momentum is beta1, the decay of the first moment: under F1-CLR it is
anti-phased with the learning rate between optim.momentum_high and optim.momentum_low exactly as
SGD's momentum is (fastai's one-cycle policy cycles Adam's beta1 the same way). The weight decay
is constant or a cosine over training (config.optim.weight_decay_end; DINO's ViT recipe).

`predictor_lr` (config.optim.fix_pred_lr: SimSiam's `--fix-pred-lr`) gives the leaves of the
network's `predictor` sub-tree a constant learning rate while the others follow the schedule. It is
done in the last link of the chain, which multiplies each leaf by its own -lr: SGD's momentum
buffer and Adam's moments hold no lr, so this is torch's param group with its own lr exactly,
whatever the schedule (no division by a scheduled lr, which is 0 at F1-CLR's first step and at a
cosine's end). The link is stateless and the value is a static argument, so the optimizer state
has the same structure (and `opt_state.hyperparams` the same keys: the logged `learning_rate` is
the scheduled one) with the option on or off; optax.multi_transform would split the state in two.
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


PREDICTOR = "predictor"  # heads.SSLNet's name for the predictor's sub-tree of the parameters


def predictor_mask(params):
    """True for the leaves of the top-level `predictor` sub-tree (SimSiam's `model.predictor`
    param group); ConfigError if the network has none."""
    if PREDICTOR not in params:
        raise ConfigError(f"optim.fix_pred_lr=True needs a network with a predictor (top-level "
                          f"parameters: {', '.join(params)}); set --config.optim.fix_pred_lr=False")
    return {k: jax.tree.map(lambda _, fixed=(k == PREDICTOR): fixed, v) for k, v in params.items()}


def scale_by_learning_rate(learning_rate, predictor_lr: float | None = None):
    """optax.scale_by_learning_rate (updates * -lr), except that the predictor's leaves get
    -predictor_lr when it is given: a constant lr for them (torch's param group with 'fix_lr').
    Stateless either way (optax.EmptyState), so the option leaves the state's structure alone."""
    if predictor_lr is None:
        return optax.scale_by_learning_rate(learning_rate)

    def update_fn(updates, state, params=None):
        del params
        fixed = predictor_mask(updates)
        updates = jax.tree.map(lambda u, f: (-predictor_lr if f else -learning_rate) * u,
                               updates, fixed)
        return updates, state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _clip(clip_grad_norm: float) -> list:
    """[clip_by_global_norm] when clip_grad_norm > 0 (torch.nn.utils.clip_grad_norm_), else []."""
    return [optax.clip_by_global_norm(clip_grad_norm)] if clip_grad_norm > 0 else []


def _sgd(learning_rate, momentum, weight_decay, mask, clip_grad_norm, predictor_lr):
    # PyTorch's SGD: buf = momentum * buf + (g + wd * p); p -= lr * buf (lr of the param's group).
    return optax.chain(
        *_clip(clip_grad_norm),
        optax.add_decayed_weights(weight_decay, mask=mask),
        optax.trace(decay=momentum, nesterov=False),
        scale_by_learning_rate(learning_rate, predictor_lr),
    )


def _adamw(learning_rate, momentum, weight_decay, beta2, mask, clip_grad_norm, predictor_lr):
    # torch.optim.AdamW: p *= 1 - lr * wd (decoupled, masked); m = b1 m + (1 - b1) g;
    # v = b2 v + (1 - b2) g^2; p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), with
    # b1 = this step's momentum in both the moment and its bias correction, as torch does when a
    # param group's betas change between steps. The inner chain is optax.adamw's own (same state
    # structure), with its last link per leaf: lr scales the step and the decay, as in torch.
    return optax.chain(
        *_clip(clip_grad_norm),
        optax.chain(
            optax.scale_by_adam(b1=momentum, b2=beta2),
            optax.add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate, predictor_lr),
        ),
    )


STATIC_ARGS = ("mask", "clip_grad_norm", "predictor_lr")  # not injected: fixed for the run


def sgd(lr_schedule, momentum_schedule, weight_decay, decay_bn_and_bias: bool,
        clip_grad_norm: float = 0.0, predictor_lr: float | None = None):
    """The schedules (and weight_decay, a float or a schedule) are injected hyper-parameters, so
    `opt_state.hyperparams` holds the learning rate, momentum and weight decay of the last update
    (logged every step). clip_grad_norm > 0 clips the raw gradient's global norm first
    (torch.nn.utils.clip_grad_norm_). predictor_lr: the constant lr of the `predictor` sub-tree
    (None: it follows lr_schedule like the rest)."""
    mask = lambda params: decay_mask(params, decay_bn_and_bias)
    return optax.inject_hyperparams(_sgd, static_args=STATIC_ARGS)(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay,
        mask=mask, clip_grad_norm=clip_grad_norm, predictor_lr=predictor_lr)


def adamw(lr_schedule, momentum_schedule, weight_decay, decay_bn_and_bias: bool,
          beta2: float = 0.999, clip_grad_norm: float = 0.0, predictor_lr: float | None = None):
    """AdamW (Loshchilov & Hutter, ICLR 2019) with beta1 = momentum_schedule. Injected as sgd()'s:
    `opt_state.hyperparams` holds learning_rate, momentum (beta1), weight_decay and beta2, so the
    train step logs the same keys for both optimizers. Weight decay uses sgd()'s mask, and
    predictor_lr is sgd()'s (it scales the predictor's decoupled decay too, as torch's group lr)."""
    mask = lambda params: decay_mask(params, decay_bn_and_bias)
    return optax.inject_hyperparams(_adamw, static_args=STATIC_ARGS)(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=weight_decay,
        beta2=beta2, mask=mask, clip_grad_norm=clip_grad_norm, predictor_lr=predictor_lr)


def weight_decay_from_config(optim_config, total_steps: int):
    """config.optim.weight_decay as a float (weight_decay_end < 0), or the cosine from it to
    weight_decay_end over the run's `total_steps`."""
    start, end = optim_config.weight_decay, optim_config.weight_decay_end
    if end < 0:
        return start
    return schedules.cosine_between_schedule(start, end, total_steps)


def from_config(optim_config, lr_schedule, momentum_schedule, total_steps: int):
    """config.optim.optimizer ('sgd' or 'adamw') with the given learning-rate and momentum
    (beta1) schedules, and weight decay (its schedule over the run's `total_steps`), its mask,
    gradient clipping and the predictor's fixed lr (optim.fix_pred_lr: optim.lr, the schedule's
    peak, as SimSiam's `init_lr`) from config.optim."""
    args = (lr_schedule, momentum_schedule, weight_decay_from_config(optim_config, total_steps),
            optim_config.decay_bn_and_bias)
    kw = dict(clip_grad_norm=optim_config.clip_grad_norm,
              predictor_lr=float(optim_config.lr) if optim_config.fix_pred_lr else None)
    if optim_config.optimizer == "sgd":
        return sgd(*args, **kw)
    if optim_config.optimizer == "adamw":
        return adamw(*args, beta2=optim_config.beta2, **kw)
    raise ConfigError(f"optim.optimizer={optim_config.optimizer!r} is unknown; valid: sgd, adamw")
