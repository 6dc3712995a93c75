"""The evaluators by name: one plain dict that `python -m effssl_jax.evaluate --protocol NAME`, the
train loop's kNN monitor (online.py) and the report's columns (report.py) all read. A new protocol
is a subclass of base.Evaluator in its own module, added with register() (from that module, a test
or a project's own code), without editing this package."""
from __future__ import annotations

import ast

from effssl_jax.errors import ConfigError
from effssl_jax.evaluate.base import Evaluator
from effssl_jax.evaluate.knn import KnnEvaluator
from effssl_jax.evaluate.lincls import SimSiamLinear
from effssl_jax.evaluate.linear import LinearProbe

EVALUATORS: dict[str, type[Evaluator]] = {
    cls.name: cls for cls in (KnnEvaluator, LinearProbe, SimSiamLinear)}
DEFAULT = ("knn", "linear")  # on features extracted once; simsiam_linear trains for 90 epochs


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Adds `cls` under cls.name (a class decorator)."""
    EVALUATORS[cls.name] = cls
    return cls


def get(name: str) -> type[Evaluator]:
    if name not in EVALUATORS:
        raise ConfigError(f"unknown protocol {name!r}; valid: {', '.join(EVALUATORS)}")
    return EVALUATORS[name]


def parse_options(items) -> dict[str, dict]:
    """['NAME.KEY=VALUE', ...] -> {NAME: {KEY: value}}: VALUE a Python literal (a string
    otherwise), checked against the evaluator's options and the type of their defaults."""
    out: dict[str, dict] = {}
    for item in items:
        path, eq, text = item.partition("=")
        name, dot, key = path.partition(".")
        if not (eq and dot):
            raise ConfigError(f"--option {item!r} is not NAME.KEY=VALUE (e.g. "
                              "linear.optimizer=sgd)")
        options = get(name).options
        if key not in options:
            raise ConfigError(f"{name} has no option {key!r}; valid: "
                              f"{', '.join(options) or 'none'}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        default = options[key]
        if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
            value = type(default)(value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if default is not None and type(value) is not type(default):
            raise ConfigError(f"--option {item}: {name}.{key} takes a {type(default).__name__} "
                              f"(default {default!r})")
        out.setdefault(name, {})[key] = value
    return out
