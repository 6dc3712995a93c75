"""What an evaluator is, as big_vision has them: a class built from the run's config (and its
`options`), given a checkpoint's frozen backbone as `Inputs`, returning its named metrics: a JSON
value stored under the evaluator's `name` in eval.json. The class also says how its result prints
(`describe`) and which columns it adds to the report (`columns`, `cells`), so that `python -m
effssl_jax.evaluate`, the train loop's kNN monitor and `python -m effssl_jax.report` need nothing
but the registry (registry.py) to use it."""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, ClassVar

import numpy as np


@dataclasses.dataclass
class SplitFeatures:
    """Backbone features of a labelled split."""
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int32 [N]
    num_classes: int
    normalized: bool = False  # rows already L2-normalised (the online monitor's)

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class Inputs:
    """A checkpoint's frozen backbone as the evaluators see it: the run's experiment (network,
    mesh, dtype), its variables, the evaluation resolution, and the bank and eval splits' features
    through `features()`, extracted on the first call, so evaluators that read features share one
    extraction and those that do not (SimSiam's augmented protocol) cost none."""
    config: Any  # the run's config (ml_collections.ConfigDict)
    exp: Any  # experiment.Experiment
    variables: dict  # {"params", "batch_stats"}
    resolution: int
    extract: Callable[[], tuple[SplitFeatures, SplitFeatures]]
    feature_s: float | None = dataclasses.field(default=None, init=False)  # once extracted
    _features: tuple | None = dataclasses.field(default=None, init=False, repr=False)

    def features(self) -> tuple[SplitFeatures, SplitFeatures]:
        """(bank, eval) features."""
        if self._features is None:
            t0 = time.perf_counter()
            self._features = self.extract()
            self.feature_s = round(time.perf_counter() - t0, 2)
        return self._features


class Evaluator:
    """The interface. A subclass sets `name` (its --protocol and eval.json key), `options` (its
    keyword arguments and their defaults: `--option NAME.KEY=VALUE` on the command line) and
    `columns`, and implements run(); describe() and cells() have defaults."""
    name: ClassVar[str]
    options: ClassVar[dict] = {}
    # (report key, header) of the accuracies (fractions) cells() returns; printed as percentages.
    columns: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config, **options):
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(f"{self.name} has no option {', '.join(sorted(unknown))}")
        self.config = config
        self.settings = {**self.options, **options}

    def run(self, inputs: Inputs) -> Any:
        """The named metrics of `inputs`' backbone, JSON-serialisable."""
        raise NotImplementedError

    @classmethod
    def describe(cls, result) -> str:
        """What the evaluate command prints of `result`."""
        return f"{cls.name}: {json.dumps(result)}"

    @classmethod
    def cells(cls, result, config) -> dict[str, float]:
        """The report's cells (keys of `columns`) of `result`, for the run of `config` (a dict)."""
        return {}
